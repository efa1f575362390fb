"""The confirmation step of near-duplicate grouping: every pair scored, whichever way it runs."""

from __future__ import annotations

import numpy as np
import pytest

from curate.neighbours import near_duplicates as nd


def _thumbnails(n: int, seed: int) -> np.ndarray:
    """Smooth random 16 x 16 RGB pictures (stored rows), so crops of one correlate with it."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 4, 4, 3))
    fine = coarse.repeat(4, axis=1).repeat(4, axis=2) + rng.normal(0, 8, (n, 16, 16, 3))
    return np.clip(fine, 0, 255).astype(np.uint8).reshape(n, -1)


def _one_pair_at_a_time(pairs: np.ndarray, thumbnails: np.ndarray) -> np.ndarray:
    """The definition: i's windows against j's whole picture, and j's against i's; the best."""
    out = []
    for i, j in pairs:
        views = nd.thumbnail_views(thumbnails[[i, j]])
        out.append(max((views[0] @ views[1, 0]).max(), (views[1] @ views[0, 0]).max()))
    return np.array(out)


@pytest.mark.parametrize("cores", [1, 2])
def test_confirm_pairs_scores_every_pair_the_same_in_blocks_serial_or_threaded(monkeypatch, cores):
    thumbnails = _thumbnails(40, seed=3)
    thumbnails[7] = thumbnails[3]  # a planted copy
    rng = np.random.default_rng(4)
    pairs = np.concatenate([[[3, 7]], rng.integers(0, 40, (60, 2))])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    expected = _one_pair_at_a_time(pairs, thumbnails)
    monkeypatch.setattr(nd.os, "cpu_count", lambda: cores)
    whole = nd.confirm_pairs(pairs, thumbnails)  # one block: one thread
    monkeypatch.setattr(nd, "CONFIRM_BLOCK", 4)  # 10+ blocks: threads when there are cores
    blocked = nd.confirm_pairs(pairs, thumbnails)
    np.testing.assert_allclose(whole, expected, atol=1e-6)
    np.testing.assert_allclose(blocked, whole, atol=1e-6)
    assert whole[0] == pytest.approx(1.0, abs=1e-5)
    assert whole[1:].max() < 0.999
