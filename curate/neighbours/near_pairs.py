"""Near-duplicate grouping: which pool images are (nearly) the same picture.

Two images are linked when the cosine similarity of their embeddings reaches a threshold; groups
are the connected components of those links (a resized copy of a cropped copy joins the group of
the original even when the two copies are further apart). Each group keeps one representative,
the member with the highest priority (``hardness_score`` in ``hardood mine``), so annotators see
one picture once.

Scale: the pairs come from a self-join over an inverted file. Vectors are split into cells by
k-means (faiss); each vector is compared, as one dense matrix product per cell, with the members
of the ``JOIN_PROBES`` cells nearest to it, keeping at most ``k`` neighbours above the threshold.
This is the probing of a faiss ``IndexIVFFlat`` search, but done as a matrix product per cell
rather than a scan per query: for the self-join of a million 512-d vectors on 2 CPU cores it
was faster than faiss's IVF search and, probing more cells in the same time, found more pairs
(``benches/dedup_scale.py``). Up to ``JOIN_EXACT_LIMIT`` vectors every pair is compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import faiss
import numpy as np
import pandas as pd

from curate.neighbours.vector_index import IVF_TRAIN_POINTS_PER_LIST, training_sample
from curate.score.clip import l2_normalize
from wood_train.progress import progress, progress_enabled

# Cosine similarity at or above which two embeddings are near-duplicates: tune_threshold on the
# default world's injected duplicates (300 JPEG re-encodes, resizes and 3-8% crops among 1,400 pool
# images; benches/dedup_threshold.py, false merges <= 1%) with the stored 6x6 thumbnail descriptor
# ("thumb6"): 0.98 gives recall 0.87, false merges 0.004. A threshold is a property of the
# embedder: on the same pool the classifier's GAP embeddings merge unrelated images at every
# threshold (false merges > 0.99 from 0.80 to 0.995), so they cannot find near-duplicates at all.
DEFAULT_THRESHOLD = 0.98
DEFAULT_K = 16
JOIN_EXACT_LIMIT = 20_000
# cells = JOIN_CELLS_PER_SQRT_N * sqrt(N): balances the k-means cost (grows with cells) against
# the join cost (grows with cell size) for N around a million.
JOIN_CELLS_PER_SQRT_N = 2
JOIN_PROBES = 8
JOIN_KMEANS_ITERATIONS = 10
_BLOCK_ENTRIES = 1 << 23  # similarity entries per matrix product (32 MB of float32)
_ASSIGN_CHUNK = 32_768
_UNIT_TOLERANCE = 1e-3


class NearPairs(NamedTuple):
    """Directed links ``src -> dst`` (row indices) with their cosine ``similarity``.

    ``nearest[i]`` is the similarity of row i's nearest other row among those compared (NaN when
    none was).
    """

    src: np.ndarray
    dst: np.ndarray
    similarity: np.ndarray
    nearest: np.ndarray


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` itself when its rows are already unit length, else an L2-normalised copy."""
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {vectors.shape}")
    for start in range(0, len(vectors), _ASSIGN_CHUNK):
        norms = np.linalg.norm(np.asarray(vectors[start : start + _ASSIGN_CHUNK]), axis=1)
        if np.any(np.abs(norms - 1.0) > _UNIT_TOLERANCE):
            return l2_normalize(vectors)
    return vectors if vectors.dtype == np.float32 else vectors.astype(np.float32)


def _probe_cells(vectors: np.ndarray, n_probe: int, seed: int) -> np.ndarray:
    """(N, n_probe) cell ids per row, nearest cell first (column 0 is the row's own cell)."""
    n, dim = vectors.shape
    n_cells = max(1, min(int(JOIN_CELLS_PER_SQRT_N * math.sqrt(n)), n // IVF_TRAIN_POINTS_PER_LIST))
    n_probe = min(n_probe, n_cells)
    sample = training_sample(n, n_cells * IVF_TRAIN_POINTS_PER_LIST, seed)
    kmeans = faiss.Kmeans(
        dim,
        n_cells,
        niter=JOIN_KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        verbose=progress_enabled(),  # faiss prints one line per iteration with its time
    )
    kmeans.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(kmeans.centroids)
    cells = np.empty((n, n_probe), dtype=np.int64)
    for start in progress(range(0, n, _ASSIGN_CHUNK), desc="assigning cells", unit="chunk"):
        chunk = np.ascontiguousarray(vectors[start : start + _ASSIGN_CHUNK], dtype=np.float32)
        cells[start : start + len(chunk)] = quantizer.search(chunk, n_probe)[1]
    return cells


def _hits(sim: np.ndarray, rows: np.ndarray, cols: np.ndarray, threshold: float, k: int):
    """Entries of ``sim`` at or above ``threshold``, at most the ``k`` largest per row."""
    r, c = np.nonzero(sim >= threshold)
    counts = np.bincount(r, minlength=len(rows))
    heavy = np.nonzero(counts > k)[0]
    if len(heavy):
        keep = counts[r] <= k
        top = np.argpartition(-sim[heavy], k - 1, axis=1)[:, :k]
        r = np.concatenate([r[keep], np.repeat(heavy, k)])
        c = np.concatenate([c[keep], top.ravel()])
    return rows[r], cols[c], sim[r, c]


def _keep_top_k(src: np.ndarray, dst: np.ndarray, sim: np.ndarray, k: int):
    order = np.lexsort((-sim, src))
    src, dst, sim = src[order], dst[order], sim[order]
    index = np.arange(len(src))
    first = np.r_[True, src[1:] != src[:-1]] if len(src) else np.zeros(0, bool)
    rank = index - np.maximum.accumulate(np.where(first, index, 0))
    keep = rank < k
    return src[keep], dst[keep], sim[keep]


def near_pairs(
    vectors: np.ndarray,
    min_similarity: float,
    k: int = DEFAULT_K,
    exact_limit: int = JOIN_EXACT_LIMIT,
    n_probe: int = JOIN_PROBES,
    seed: int = 0,
) -> NearPairs:
    """For each row, up to ``k`` other rows with cosine similarity >= ``min_similarity``.

    Parameters
    ----------
    vectors
        (N, D) L2-normalised float32 rows (a memory map is fine).
    exact_limit
        Up to this N every pair is compared; beyond it each row is compared with the members of
        its ``n_probe`` nearest k-means cells, which finds close pairs with high probability.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = len(vectors)
    cells = np.zeros((n, 1), np.int64) if n <= exact_limit else _probe_cells(vectors, n_probe, seed)
    n_cells = int(cells.max()) + 1 if n else 0
    own = cells[:, 0]
    members_by_cell = np.argsort(own, kind="stable")
    member_bounds = np.searchsorted(own[members_by_cell], np.arange(n_cells + 1))
    probes = cells.ravel()
    queries_by_cell = np.argsort(probes, kind="stable")
    query_bounds = np.searchsorted(probes[queries_by_cell], np.arange(n_cells + 1))
    queries_by_cell //= cells.shape[1]  # flat position -> row
    slot = np.empty(n, np.int64)  # position of each row among its own cell's members
    slot[members_by_cell] = np.arange(n) - member_bounds[own[members_by_cell]]
    nearest = np.full(n, -np.inf, np.float32)
    parts = []
    bar = progress(total=len(probes), desc="near-duplicate search", unit="query")
    for cell in range(n_cells):
        members = members_by_cell[member_bounds[cell] : member_bounds[cell + 1]]
        queries = queries_by_cell[query_bounds[cell] : query_bounds[cell + 1]]
        if len(members) == 0 or len(queries) == 0:
            continue
        base_t = np.ascontiguousarray(vectors[members], dtype=np.float32).T
        step = max(1, _BLOCK_ENTRIES // len(members))
        for start in range(0, len(queries), step):
            q = queries[start : start + step]
            sim = np.asarray(vectors[q], dtype=np.float32) @ base_t
            in_cell = np.nonzero(own[q] == cell)[0]
            sim[in_cell, slot[q[in_cell]]] = -np.inf  # a row is not its own neighbour
            row_max = sim.max(axis=1)
            nearest[q] = np.maximum(nearest[q], row_max)
            hit_rows = np.nonzero(row_max >= min_similarity)[0]  # usually few: scan only those
            parts.append(_hits(sim[hit_rows], q[hit_rows], members, min_similarity, k))
            bar.update(len(q))
    bar.close()
    if parts:
        src, dst, sim = (np.concatenate(column) for column in zip(*parts))
        src, dst, sim = _keep_top_k(src, dst, sim, k)
    else:
        src, dst, sim = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    nearest[np.isinf(nearest)] = np.nan
    return NearPairs(src, dst, sim, nearest)


def connected_components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Component label of each of ``n`` nodes (the smallest node index in its component)."""
    parent = np.arange(n)
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    while True:
        a, b = parent[src], parent[dst]
        differ = a != b
        if not differ.any():
            return parent
        # hook the larger root under the smaller, then compress every path to its root
        np.minimum.at(parent, np.maximum(a, b)[differ], np.minimum(a, b)[differ])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped


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


def group_near_duplicates(
    vectors: np.ndarray,
    keys: Sequence[str],
    priority: Sequence[float] | np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
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
    >>> groups = group_near_duplicates(z, sha256s, priority=hardness)
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
    thresholds: Sequence[float] = tuple(np.round(np.arange(0.80, 0.996, 0.005), 3)),
    k: int = DEFAULT_K,
) -> pd.DataFrame:
    """Recall and false merges of ``group_near_duplicates`` at each threshold (one search).

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
    thresholds: Sequence[float] = tuple(np.round(np.arange(0.80, 0.996, 0.005), 3)),
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
