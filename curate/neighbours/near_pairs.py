"""Close pairs of vectors at pool scale, and the connected components of a set of links.

``near_pairs`` finds, for every row, the other rows whose cosine similarity reaches a threshold;
``connected_components`` turns links into groups (a resized copy of a cropped copy joins the group
of the original even when the two copies are further apart). ``curate.neighbours.near_duplicates``
uses both to find near-duplicate images from their thumbnails.

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
from typing import NamedTuple

import faiss
import numpy as np

from curate.neighbours.vector_index import IVF_TRAIN_POINTS_PER_LIST, training_sample
from curate.score.clip import l2_normalize
from wood_train.progress import progress, progress_enabled

DEFAULT_K = 16  # links kept per row: enough to keep a dense group of copies connected
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
    cells = np.empty((n, n_probe), dtype=np.int32)  # int32: 10M rows x 8 probes in 320 MB
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
    cells = np.zeros((n, 1), np.int32) if n <= exact_limit else _probe_cells(vectors, n_probe, seed)
    n_cells = int(cells.max()) + 1 if n else 0
    own = cells[:, 0]
    members_by_cell = np.argsort(own, kind="stable")
    member_bounds = np.concatenate([[0], np.cumsum(np.bincount(own, minlength=n_cells))])
    probes = cells.ravel()
    queries_by_cell = np.argsort(probes, kind="stable")
    query_bounds = np.concatenate([[0], np.cumsum(np.bincount(probes, minlength=n_cells))])
    queries_by_cell //= cells.shape[1]  # flat position -> row
    queries_by_cell = queries_by_cell.astype(np.int32 if n < 2**31 else np.int64)
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
