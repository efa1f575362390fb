import numpy as np
import pytest

from curate.neighbours.diversity import cluster_within_classes
from curate.score.clip import l2_normalize


def _blobs(centres, per_blob, rng, spread=0.05):
    """Unit vectors scattered tightly around each centre; returns (vectors, blob id)."""
    points = np.concatenate([c + spread * rng.standard_normal((per_blob, len(c))) for c in centres])
    return l2_normalize(points), np.repeat(np.arange(len(centres)), per_blob)


@pytest.fixture
def two_classes():
    """Class 0: three far-apart blobs of 20 points; class 1: two blobs of 15 (16-d)."""
    rng = np.random.default_rng(0)
    eye = np.eye(16)
    x0, b0 = _blobs(eye[[0, 1, 2]], 20, rng)
    x1, b1 = _blobs(eye[[3, 4]], 15, rng)
    vectors = np.concatenate([x0, x1])
    top_class = np.r_[np.zeros(60, int), np.ones(30, int)]
    blob = np.r_[b0, 10 + b1]
    keys = [f"{i:03d}" + "ab" * 30 for i in range(90)]
    return vectors, top_class, blob, keys


def _same_partition(a, b):
    pairs_a = a[:, None] == a[None, :]
    pairs_b = b[:, None] == b[None, :]
    return np.array_equal(pairs_a, pairs_b)


def test_clusters_recover_planted_blobs_within_each_class(two_classes):
    vectors, top_class, blob, keys = two_classes
    clusters = cluster_within_classes(vectors, top_class, n_clusters=3, keys=keys)
    assert clusters.dtype == np.int64 and clusters.min() >= 0
    assert _same_partition(clusters[:60], blob[:60])
    assert sorted(set(clusters[:60])) == [0, 1, 2]
    assert sorted(set(clusters[60:])) == [0, 1, 2]  # two blobs, three clusters asked: one splits
    two = cluster_within_classes(vectors, top_class, n_clusters=2, keys=keys)
    assert _same_partition(two[60:], blob[60:])


def test_ids_are_numbered_by_first_key_and_independent_of_row_order(two_classes):
    vectors, top_class, blob, keys = two_classes
    clusters = cluster_within_classes(vectors, top_class, n_clusters=3, keys=keys)
    assert clusters[0] == 0 and clusters[60] == 0  # smallest key of each class: cluster 0
    order = np.random.default_rng(1).permutation(90)
    shuffled = cluster_within_classes(
        vectors[order], top_class[order], n_clusters=3, keys=[keys[i] for i in order]
    )
    assert shuffled.tolist() == clusters[order].tolist()


def test_small_classes_get_one_cluster_per_item():
    vectors = l2_normalize(np.random.default_rng(2).standard_normal((4, 8)))
    clusters = cluster_within_classes(vectors, np.array([5, 5, 7, 9]), n_clusters=20)
    assert sorted(clusters[:2].tolist()) == [0, 1]
    assert clusters[2:].tolist() == [0, 0]


def test_bad_inputs_are_clear_errors(two_classes):
    vectors, top_class, _, keys = two_classes
    with pytest.raises(ValueError, match="top_class has shape"):
        cluster_within_classes(vectors, top_class[:5])
    with pytest.raises(ValueError, match="3 keys for 90 vectors"):
        cluster_within_classes(vectors, top_class, keys=keys[:3])
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_within_classes(vectors, top_class, n_clusters=0)
