"""Diversity clusters: k-means within each predicted class, so the queue can spread over looks.

Without them the top of a hardness ranking is often many variations of one scene (one stretch of
rails scored "train" a hundred times). Each class is clustered on its own; the queue then takes
images round-robin over clusters.

Cluster ids do not depend on the row order of the input: rows are sorted by key before k-means
(which seeds from a random subset of rows) and clusters are numbered in order of their first
member by key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from curate.neighbours.near_pairs import unit_rows
from wood_train.progress import progress

DEFAULT_CLUSTERS = 20
KMEANS_ITERATIONS = 20
# Up to this many rows a class is clustered on one thread. Each k-means iteration is a few small
# parallel steps; on a busy 2-core machine every step waits for a second thread to be scheduled,
# and 1,000 rows took 0.1 s on two threads against 0.004 s on one. At 20,000 rows one thread is
# within 15% of two on an idle machine. The clusters are the same either way.
ONE_THREAD_ROWS = 20_000


def _cluster_one_class(vectors: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    k = min(n_clusters, len(vectors))
    if k <= 1:
        return np.zeros(len(vectors), np.int64)
    kmeans = faiss.Kmeans(
        vectors.shape[1],
        k,
        niter=KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        min_points_per_centroid=1,  # few points per cluster is expected for rare classes
    )
    small = len(vectors) <= ONE_THREAD_ROWS
    with threadpool_limits(1) if small else contextlib.nullcontext():
        kmeans.train(vectors)
        labels = kmeans.index.search(vectors, 1)[1].ravel()
    # renumber by first appearance, so ids follow the (key-sorted) row order, not k-means' order
    _, first = np.unique(labels, return_index=True)
    renumber = np.empty(labels.max() + 1, np.int64)
    renumber[labels[np.sort(first)]] = np.arange(len(first))
    return renumber[labels]


def cluster_within_classes(
    vectors: np.ndarray,
    top_class: Sequence[int] | np.ndarray,
    n_clusters: int = DEFAULT_CLUSTERS,
    seed: int = 0,
    keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Cluster id of each row, from spherical k-means run separately within each class.

    Parameters
    ----------
    vectors
        (N, D) embeddings (normalised here if needed; clusters use cosine similarity).
    top_class
        (N,) the class each row is grouped under (the classifier's top class).
    n_clusters
        Clusters per class; a class with fewer rows gets one cluster per row.
    seed
        k-means seed.
    keys
        (N,) image keys. When given, the result is the same for any row order of the input.

    Returns
    -------
    numpy.ndarray
        (N,) int64 cluster ids, ``0 .. min(n_clusters, n_class) - 1`` within each class.

    Examples
    --------
    >>> clusters = cluster_within_classes(z, scores.top_class, keys=scores.sha256)
    """
    top_class = np.asarray(top_class)
    if top_class.shape != (len(vectors),):
        raise ValueError(f"top_class has shape {top_class.shape}, expected ({len(vectors)},)")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be at least 1, got {n_clusters}")
    order = np.arange(len(vectors))
    if keys is not None:
        keys = np.asarray(list(keys), dtype=str)
        if keys.shape != (len(vectors),):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        order = np.argsort(keys, kind="stable")
    unit = unit_rows(np.asarray(vectors))
    clusters = np.empty(len(vectors), np.int64)
    for cls in progress(np.unique(top_class), desc="diversity clusters", unit="class"):
        rows = order[top_class[order] == cls]  # this class's rows, in key order
        block = np.ascontiguousarray(unit[rows], dtype=np.float32)
        clusters[rows] = _cluster_one_class(block, n_clusters, seed)
    return clusters
