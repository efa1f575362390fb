"""A compressed faiss index saved beside an embedder's vectors, for "more like this" at 10M images.

Up to ``APPROXIMATE_FROM`` (100,000) vectors, ``hardood similar`` searches exactly. Beyond,
loading and indexing every vector per question would take minutes, so the first question builds
an IVF-PQ index (``IVF<nlist>_HNSW32,PQ<m>``: an HNSW coarse quantizer, 8 dimensions per 1-byte
code, so 10M x 512-d vectors take 640 MB) and saves it as ``<embedder>.ivfpq`` in the embeddings
folder with the number of file rows it holds. Later questions memory-map it (reading only the
lists they probe), add the rows appended since, and search it. The ``RERANK``-fold candidates it
returns are re-ranked with the exact vectors read from the memory-mapped file, so the order and
similarities shown are exact.
"""

from __future__ import annotations

import json
import math
import sqlite3

import faiss
import numpy as np

from curate import store
from curate.neighbours.vector_index import ADD_CHUNK, EmbeddingFile, training_sample
from wood_train.progress import progress

APPROXIMATE_FROM = 100_000
NPROBE = 64
# candidates per neighbour asked for, re-ranked exactly: at 10M vectors, 8 found 0.71 of the
# exact 20 nearest, 32 found 0.94 and 64 found 0.96, all in the same 0.43 s per question
RERANK = 64
# the HNSW coarse quantizer's search depth when it picks the NPROBE lists; faiss's default (16)
# sometimes misses the query's own region entirely (recall 0 for 1 question of 20 at 10M)
QUANTIZER_EF_SEARCH = 2 * NPROBE
MAX_LISTS = 4096
LISTS_PER_SQRT_N = 2
TRAIN_POINTS_PER_LIST = 32
KMEANS_ITERATIONS = 10  # of the coarse k-means (faiss's default is 25; 10 is enough for recall)


def _paths(conn: sqlite3.Connection, embedder: str):
    folder = store.embeddings_dir(conn)
    return folder / f"{embedder}.ivfpq", folder / f"{embedder}.ivfpq.json"


def _factory(n: int, dim: int) -> str:
    nlist = int(min(MAX_LISTS, max(64, LISTS_PER_SQRT_N * math.sqrt(n))))
    codes = max(1, dim // 8) if dim % 8 == 0 else dim
    return f"IVF{nlist}_HNSW32,PQ{codes}"


def _add(index: faiss.Index, data: np.ndarray, start: int, stop: int) -> None:
    for first in progress(range(start, stop, ADD_CHUNK), desc="indexing", unit="chunk"):
        last = min(first + ADD_CHUNK, stop)
        block = np.ascontiguousarray(data[first:last], dtype=np.float32)
        index.add_with_ids(block, np.arange(first, last, dtype=np.int64))


def load_or_build(conn: sqlite3.Connection, embedder: str) -> faiss.Index:
    """The saved index of ``embedder`` holding every row of its file (built or extended here)."""
    file = EmbeddingFile.open(conn, embedder)
    data = file._memmap()
    n = len(data)
    index_path, meta_path = _paths(conn, embedder)
    held = 0
    if index_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        held = int(meta["rows"])
        # memory-mapped: a question reads the lists it probes, not the whole index
        index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    if held == 0 or held > n:  # none yet, or the file was replaced: start again
        index = faiss.index_factory(file.dim, _factory(n, file.dim), faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = KMEANS_ITERATIONS
        sample = training_sample(n, ivf.nlist * TRAIN_POINTS_PER_LIST)
        index.train(np.ascontiguousarray(data[sample], dtype=np.float32))
        held = 0
    if held < n:
        if held:  # a memory-mapped index is read-only: read it whole to extend it
            index = faiss.read_index(str(index_path))
        _add(index, data, held, n)
        tmp = index_path.with_suffix(".ivfpq.tmp")
        faiss.write_index(index, str(tmp))
        tmp.replace(index_path)
        meta_path.write_text(json.dumps({"rows": n, "factory": _factory(n, file.dim)}))
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = NPROBE
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = QUANTIZER_EF_SEARCH
    return index


def nearest_rows(
    conn: sqlite3.Connection, embedder: str, query_row: int, k: int
) -> list[tuple[int, float]]:
    """Up to ``k`` (file row, cosine similarity) nearest to row ``query_row``, itself left out.

    Candidates come from the saved IVF-PQ index, their order and similarity from the exact
    vectors.
    """
    data = EmbeddingFile.open(conn, embedder)._memmap()
    index = load_or_build(conn, embedder)
    query = np.ascontiguousarray(data[query_row : query_row + 1], dtype=np.float32)
    _, rows = index.search(query, RERANK * (k + 1))
    rows = np.unique(rows[0][rows[0] >= 0])
    rows = rows[rows != query_row]
    sims = np.asarray(data[rows], dtype=np.float32) @ query[0]
    order = np.argsort(-sims, kind="stable")[:k]
    return [(int(rows[i]), float(sims[i])) for i in order]
