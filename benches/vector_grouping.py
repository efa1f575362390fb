"""Near-duplicate grouping of plain vectors by a cosine threshold, and how to score a grouping.

Bench-side tools, not part of the library: the queue groups near duplicates with thumbnails
confirmed by aligned correlation (``curate.neighbours.near_duplicates``). These group vectors of
any embedder by cosine alone, so ``benches/dedup_scale.py`` can time the pair search at a million
vectors and ``benches/dedup_threshold.py`` / ``benches/mining_quality.py`` can show what a cosine
threshold does on each embedder (on the world, the classifier's GAP features merge unrelated
images at every threshold, which is why the queue does not use them for duplicates).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from curate.neighbours.near_pairs import (
    DEFAULT_K,
    NearPairs,
    connected_components,
    near_pairs,
    unit_rows,
)

# Cosine similarity at or above which two embeddings count as near duplicates here. On the default
# world's pool (1,200 images, 100 of them near duplicates: JPEG re-encodes, resizes, 3-8% crops),
# `benches/dedup_threshold.py --embedder thumb6` gives recall 0.91 and false merges 0.011 at 0.98
# (0.86 and 0.000 at 0.985): cosine on a 6x6 thumbnail alone is not enough, which is why the queue
# confirms each candidate pair by aligned correlation.
DEFAULT_COSINE_THRESHOLD = 0.98
SWEEP_THRESHOLDS = tuple(np.round(np.arange(0.80, 0.996, 0.005), 3))


def _check_inputs(vectors: np.ndarray, keys: Sequence[str], priority) -> tuple:
    keys_arr = np.asarray(list(keys), dtype=object)
    if len(keys_arr) != len(vectors):
        raise ValueError(f"{len(keys_arr)} keys for {len(vectors)} vectors")
    repeated = pd.Index(keys_arr).duplicated()
    if repeated.any():
        raise ValueError(f"key {keys_arr[repeated][0]!r} appears more than once")
    if priority is None:
        prio = np.zeros(len(keys_arr))
    else:
        prio = np.asarray(priority, dtype=np.float64)
        if prio.shape != (len(keys_arr),):
            raise ValueError(f"priority has shape {prio.shape}, expected ({len(keys_arr)},)")
        prio = np.where(np.isnan(prio), -np.inf, prio)
    return keys_arr, prio


def _groups_frame(keys: np.ndarray, prio: np.ndarray, pairs: NearPairs, threshold: float):
    n = len(keys)
    linked = pairs.similarity >= threshold
    labels = connected_components(n, pairs.src[linked], pairs.dst[linked])
    key_rank = np.empty(n, np.int64)
    key_rank[np.argsort(keys.astype(str), kind="stable")] = np.arange(n)
    order = np.lexsort((key_rank, -prio, labels))  # by group, then priority down, then key
    first = np.r_[True, labels[order][1:] != labels[order][:-1]] if n else np.zeros(0, bool)
    representative_of = np.empty(n, np.int64)
    representative_of[labels[order][first]] = order[first]
    return pd.DataFrame(
        {
            "sha256": keys,
            "representative": keys[representative_of[labels]],
            "group_size": np.bincount(labels, minlength=n)[labels],
            "dup_score": pairs.nearest.astype(np.float64),
        }
    )


def group_by_cosine(
    vectors: np.ndarray,
    keys: Sequence[str],
    priority: Sequence[float] | np.ndarray | None = None,
    threshold: float = DEFAULT_COSINE_THRESHOLD,
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """Group near-duplicate images and pick one representative per group.

    Parameters
    ----------
    vectors
        (N, D) embeddings, one per key (normalised here if they are not unit length).
    keys
        N distinct image keys (sha256).
    priority
        Higher wins the representative (e.g. ``hardness_score``); ties and ``None`` go to the
        smallest key. NaN counts as lowest.
    threshold
        Cosine similarity at or above which two images are linked.
    k
        At most ``k`` links are kept per image (its ``k`` most similar).

    Returns
    -------
    pandas.DataFrame
        One row per key, in input order: ``sha256``, ``representative`` (the key of the group's
        representative; itself for a singleton), ``group_size`` and ``dup_score`` (cosine
        similarity to the nearest other image found, NaN if none; >= threshold within a group).

    Examples
    --------
    >>> groups = group_by_cosine(z, sha256s, priority=hardness)
    >>> keep = groups[groups.sha256 == groups.representative]
    """
    keys_arr, prio = _check_inputs(vectors, keys, priority)
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    pairs = near_pairs(unit_rows(vectors), threshold, k)
    return _groups_frame(keys_arr, prio, pairs, threshold)


def _pair_count(sizes: np.ndarray) -> int:
    sizes = sizes.astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def grouping_quality(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Pairwise ``(recall, false_merge)`` of a grouping against true group labels.

    ``recall``: share of true same-group pairs that were grouped together (1.0 with none).
    ``false_merge``: share of grouped pairs that are not true pairs (0.0 with none).
    """
    predicted = pd.factorize(np.asarray(predicted))[0].astype(np.int64)
    truth = pd.factorize(np.asarray(truth))[0].astype(np.int64)
    predicted_pairs = _pair_count(np.bincount(predicted))
    true_pairs = _pair_count(np.bincount(truth))
    both = _pair_count(np.unique(predicted * (truth.max() + 1) + truth, return_counts=True)[1])
    recall = both / true_pairs if true_pairs else 1.0
    false_merge = (predicted_pairs - both) / predicted_pairs if predicted_pairs else 0.0
    return recall, false_merge


def _true_labels(true_groups: Sequence, n: int) -> np.ndarray:
    """Factorised labels; missing labels (None, NaN, "", -1) are singletons."""
    labels = pd.Series(list(true_groups), dtype=object)
    if len(labels) != n:
        raise ValueError(f"true_groups has {len(labels)} entries for {n} keys")
    missing = labels.isna() | labels.isin(["", -1])
    codes = pd.factorize(labels.where(~missing, None))[0].astype(np.int64)
    codes[missing.to_numpy()] = codes.max(initial=-1) + 1 + np.arange(int(missing.sum()))
    return codes


def threshold_sweep(
    vectors: np.ndarray,
    keys: Sequence[str],
    true_groups: Sequence,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """Recall and false merges of ``group_by_cosine`` at each threshold (one search).

    ``true_groups`` gives each key's true group label (copies of one picture share a label);
    None, NaN, "" or -1 mark images with no duplicate.
    """
    keys_arr, prio = _check_inputs(vectors, keys, None)
    truth = _true_labels(true_groups, len(keys_arr))
    pairs = near_pairs(unit_rows(vectors), float(min(thresholds)), k)
    rows = []
    for threshold in sorted(thresholds):
        groups = _groups_frame(keys_arr, prio, pairs, threshold)
        recall, false_merge = grouping_quality(groups["representative"].to_numpy(), truth)
        rows.append(
            {
                "threshold": float(threshold),
                "recall": recall,
                "false_merge": false_merge,
                "n_groups": groups.representative[groups.group_size > 1].nunique(),
            }
        )
    return pd.DataFrame(rows)


def tune_threshold(
    vectors: np.ndarray,
    keys: Sequence[str],
    true_groups: Sequence,
    max_false_merge: float = 0.01,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    k: int = DEFAULT_K,
) -> tuple[float, float, float]:
    """The threshold with the best recall whose false-merge share stays <= ``max_false_merge``.

    Ties go to the higher (more cautious) threshold; if none qualifies, the threshold with the
    fewest false merges. Returns ``(threshold, recall, false_merge)``.
    """
    sweep = threshold_sweep(vectors, keys, true_groups, thresholds, k)
    ok = sweep[sweep.false_merge <= max_false_merge]
    if len(ok):
        best = ok.sort_values(["recall", "threshold"], ascending=[False, False]).iloc[0]
    else:
        best = sweep.sort_values(["false_merge", "recall"], ascending=[True, False]).iloc[0]
    return float(best.threshold), float(best.recall), float(best.false_merge)
