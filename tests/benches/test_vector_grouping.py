"""The bench-side cosine grouping: planted copies group, near misses stay apart, sweeps pick the
threshold that keeps every planted copy."""

import numpy as np
import pytest

from benches.vector_grouping import (
    group_by_cosine,
    grouping_quality,
    threshold_sweep,
    tune_threshold,
)
from curate.score.clip import l2_normalize


def _unit(n, dim, seed):
    return l2_normalize(np.random.default_rng(seed).standard_normal((n, dim)))


def _at_cosine(v, cosine, rng):
    """A unit vector at exactly ``cosine`` to unit vector ``v``."""
    other = rng.standard_normal(v.shape)
    other -= (other @ v) * v
    other /= np.linalg.norm(other)
    return (cosine * v + np.sqrt(1 - cosine**2) * other).astype(np.float32)


def _keys(n):
    return [f"{i:02x}" * 32 for i in range(n)]


@pytest.fixture
def planted():
    """60 random 64-d vectors (pairwise cosine < 0.6) with planted near-duplicates:

    rows 1, 2 copy row 0 (cos 0.99, 0.97); rows 4 -> 5 -> 6 form a chain (0.962 per step, row 6
    only ~0.93 from row 4); row 8 is a near miss of row 7 (cos 0.90).
    """
    rng = np.random.default_rng(0)
    x = _unit(60, 64, seed=1)
    x[1], x[2] = _at_cosine(x[0], 0.99, rng), _at_cosine(x[0], 0.97, rng)
    x[5] = _at_cosine(x[4], 0.962, rng)
    x[6] = _at_cosine(x[5], 0.962, rng)
    x[8] = _at_cosine(x[7], 0.90, rng)
    return x


def test_groups_follow_links_transitively_and_keep_near_misses_apart(planted):
    keys = _keys(60)
    groups = group_by_cosine(planted, keys, threshold=0.95)
    assert groups.sha256.tolist() == keys
    rep = dict(zip(groups.sha256, groups.representative))
    assert {rep[keys[i]] for i in (0, 1, 2)} == {keys[0]}
    assert planted[4] @ planted[6] < 0.95  # the chain's ends are not linked themselves ...
    assert {rep[keys[i]] for i in (4, 5, 6)} == {keys[4]}  # ... but share a group
    assert rep[keys[7]] == keys[7] and rep[keys[8]] == keys[8]
    sizes = dict(zip(groups.sha256, groups.group_size))
    assert [sizes[keys[i]] for i in (0, 2, 5, 7, 8, 30)] == [3, 3, 3, 1, 1, 1]


def test_dup_score_is_the_nearest_neighbour_similarity(planted):
    groups = group_by_cosine(planted, _keys(60), threshold=0.95)
    gram = planted @ planted.T
    np.fill_diagonal(gram, -np.inf)
    np.testing.assert_allclose(groups.dup_score, gram.max(axis=1), atol=1e-5)
    assert groups.dup_score[1] == pytest.approx(0.99, abs=1e-4)


def test_representative_is_highest_priority_then_smallest_key(planted):
    keys = _keys(60)
    priority = np.zeros(60)
    priority[2] = 0.8  # the cos-0.97 copy is the hardest of its group
    priority[5] = priority[6] = 0.5  # a tie between two chain members
    priority[4] = np.nan  # no score: lowest
    groups = group_by_cosine(planted, keys, priority, threshold=0.95)
    rep = groups.set_index("sha256").representative
    assert rep[keys[0]] == rep[keys[1]] == keys[2]
    assert rep[keys[4]] == keys[5]  # keys[5] < keys[6]


def test_unnormalised_vectors_give_the_same_groups(planted):
    scale = np.random.default_rng(3).uniform(0.5, 9.0, size=(60, 1)).astype(np.float32)
    a = group_by_cosine(planted, _keys(60))
    b = group_by_cosine(planted * scale, _keys(60))
    assert a.representative.tolist() == b.representative.tolist()
    np.testing.assert_allclose(a.dup_score, b.dup_score, atol=1e-5)


def test_k_caps_links_per_image_but_a_dense_group_stays_connected():
    # 30 points along a short arc: each point's nearest are its arc neighbours
    angles = np.linspace(0.0, 0.25, 30)
    arc = np.zeros((30, 8), np.float32)
    arc[:, 0], arc[:, 1] = np.cos(angles), np.sin(angles)
    groups = group_by_cosine(arc, _keys(30), threshold=0.95, k=4)
    assert set(groups.group_size) == {30}


def test_grouping_quality_counts_pairs():
    recall, false_merge = grouping_quality(np.array(["a", "a", "b", "b"]), np.array([0, 0, 0, 1]))
    assert recall == pytest.approx(1 / 3)  # true pairs 01, 02, 12; found 01
    assert false_merge == pytest.approx(1 / 2)  # grouped pairs 01, 23; 23 is wrong


def test_tune_threshold_picks_the_highest_threshold_keeping_every_copy(planted):
    truth = [None] * 60
    for i in (0, 1, 2):
        truth[i] = "g0"
    for i in (4, 5, 6):
        truth[i] = "g1"
    sweep = threshold_sweep(planted, _keys(60), truth)
    assert sweep.threshold.is_monotonic_increasing
    threshold, recall, false_merge = tune_threshold(planted, _keys(60), truth)
    # the weakest link a true group needs is a 0.962 step of the chain (grid: 0.955, 0.96, 0.965)
    assert threshold == 0.96 and recall == 1.0 and false_merge == 0.0
    below = sweep[sweep.threshold <= 0.9].iloc[-1]
    assert below.false_merge > 0  # at 0.90 the near miss merges


def test_bad_inputs_name_the_problem(planted):
    with pytest.raises(ValueError, match="appears more than once"):
        group_by_cosine(planted[:2], ["a", "a"])
    with pytest.raises(ValueError, match="3 keys for 60 vectors"):
        group_by_cosine(planted, ["a", "b", "c"])
    with pytest.raises(ValueError, match="priority has shape"):
        group_by_cosine(planted, _keys(60), priority=[1.0])
