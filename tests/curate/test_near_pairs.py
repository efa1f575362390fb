"""The library's pair search and components: planted close pairs are found, links make groups."""

import numpy as np

from curate.neighbours.near_pairs import connected_components, near_pairs
from curate.score.clip import l2_normalize


def _unit(n, dim, seed):
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, dim)))


def _at_cosine(v, cosine, rng):
    """A unit vector at exactly ``cosine`` to unit vector ``v``."""
    other = rng.standard_normal(v.shape)
    other -= (other @ v) * v
    other /= np.linalg.norm(other)
    return (cosine * v + np.sqrt(1 - cosine**2) * other).astype(np.float32)


def test_connected_components_on_planted_graph():
    labels = connected_components(7, np.array([5, 1, 3, 2]), np.array([6, 0, 2, 1]))
    assert labels.tolist() == [0, 0, 0, 0, 4, 5, 5]


def test_inverted_file_search_finds_the_planted_pairs():
    rng = np.random.default_rng(5)
    x = _unit(6_000, 32, seed=6)
    originals = rng.choice(6_000, size=200, replace=False)
    copies = np.setdiff1d(np.arange(6_000), originals)[:200]
    for o, c in zip(originals, copies):
        x[c] = _at_cosine(x[o], 0.97, rng)
    exact = near_pairs(x, 0.95, k=8, exact_limit=10_000)
    ivf = near_pairs(x, 0.95, k=8, exact_limit=100)
    planted_pairs = {tuple(sorted(p)) for p in zip(originals.tolist(), copies.tolist())}
    for found in (exact, ivf):
        assert {tuple(sorted(p)) for p in zip(found.src.tolist(), found.dst.tolist())} == (
            planted_pairs
        )
    both = ~np.isnan(ivf.nearest)
    assert both.all()
    assert np.all(ivf.nearest <= exact.nearest + 1e-6)  # probing fewer cells never finds closer


def test_k_caps_links_per_image_but_a_dense_group_stays_connected():
    # 30 points along a short arc: each point's nearest are its arc neighbours
    angles = np.linspace(0.0, 0.25, 30)
    arc = np.zeros((30, 8), np.float32)
    arc[:, 0], arc[:, 1] = np.cos(angles), np.sin(angles)
    pairs = near_pairs(arc, 0.95, k=4)
    assert np.bincount(pairs.src).max() == 4
    labels = connected_components(30, pairs.src, pairs.dst)
    assert set(labels) == {0}
