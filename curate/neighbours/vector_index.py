"""Embedding vectors on disk and the faiss index that searches them.

A store is its SQLite file plus a folder beside it: vectors of one embedder live in an append-only
file ``<db stem>.embeddings/<embedder>.f32`` (row-major, ``dim`` values a row; ``.f16`` for float16
and ``.u8`` for uint8 rows such as the stored thumbnails), with ``<embedder>.json`` recording
``dim`` and ``dtype``. The ``embeddings`` table maps each image's sha256 to its row. Reads are
memory maps, so ten million rows never have to fit in RAM. Rows are written and forced to disk
before the transaction that inserts the table rows pointing at them commits, so an interrupted run
can leave unreferenced rows at the end of the file, never table rows pointing past it. A store
copied without its folder has table rows and no vectors: ``forget_missing_vectors`` drops those
rows, so the next ``hardood mine`` re-embeds the images.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np

from curate import store
from wood_train.errors import ConfigError, DataError, MissingInputError
from wood_train.progress import progress

# Exact search (IndexFlat) up to this many vectors; an IVF index beyond.
EXACT_SEARCH_LIMIT = 1_000_000
# IVF: nlist = IVF_LISTS_PER_SQRT_N * sqrt(N) (faiss's guideline is 4..16 * sqrt(N)); k-means is
# trained on IVF_TRAIN_POINTS_PER_LIST points per list (faiss warns below 39).
IVF_LISTS_PER_SQRT_N = 4
IVF_TRAIN_POINTS_PER_LIST = 39
IVF_NPROBE = 32
ADD_CHUNK = 65_536
# stored dtype -> file suffix; float32 is the default and the only one older stores hold
DTYPE_SUFFIX = {"float32": ".f32", "float16": ".f16", "uint8": ".u8"}
_EMBEDDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SQL_CHUNK = 500  # stay below SQLite's bound-parameter limit


def _missing_folder(conn: sqlite3.Connection, folder: Path) -> MissingInputError:
    return MissingInputError(
        f"{store.db_path(conn)}: its embeddings folder {folder} is missing (a store is its .db "
        "file plus that folder beside it); copy the folder next to the .db, or re-run "
        "`hardood mine` with the same checkpoint to re-embed the images"
    )


def sync_files(files: Sequence[EmbeddingFile]) -> None:
    """``EmbeddingFile.sync`` of several files side by side: the file system then commits their
    journal once instead of once per file (3 files: about a quarter of the time, one by one)."""
    if len(files) <= 1:
        for file in files:
            file.sync()
        return
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        list(pool.map(EmbeddingFile.sync, files))  # fsync releases the GIL; errors re-raised


class EmbeddingFile:
    """The append-only vector file of one embedder, indexed through the store's ``embeddings`` table.

    The file borrows the caller's connection: table rows are read and written through it (and
    commit with the caller's transaction), and the file lives in ``store.embeddings_dir(conn)``.

    Parameters
    ----------
    conn
        A connection to the curation store (``store.connect``).
    embedder
        Name of the embedder (``"classifier"``, ``"clip"``, ...); also the file name.
    dim
        Vector dimension; must match the dimension recorded when the file was created.
    dtype
        ``"float32"`` (default), ``"float16"`` (half the disk; read back as float32) or
        ``"uint8"`` (thumbnails); must match the dtype recorded when the file was created.

    Examples
    --------
    >>> with store.connect("pool.db") as conn:  # doctest: +SKIP
    ...     vectors = EmbeddingFile(conn, "classifier", dim=2048)
    ...     with store.transaction(conn):
    ...         vectors.append(sha256s, z)
    """

    def __init__(self, conn: sqlite3.Connection, embedder: str, dim: int, dtype: str = "float32"):
        if not _EMBEDDER_NAME.match(embedder):
            raise ConfigError(
                f"embedder name {embedder!r} must be letters, digits, '_', '-' or '.' "
                "(it names a file)"
            )
        if int(dim) < 1:
            raise ValueError(f"embedding dimension must be positive, got {dim}")
        if dtype not in DTYPE_SUFFIX:
            raise ValueError(
                f"embedding dtype must be one of {sorted(DTYPE_SUFFIX)}, got {dtype!r}"
            )
        self.conn = conn
        self.embedder = embedder
        self.dim = int(dim)
        self.dtype = dtype
        folder = store.embeddings_dir(conn)
        self.path = folder / f"{embedder}{DTYPE_SUFFIX[dtype]}"
        self.meta_path = folder / f"{embedder}.json"
        if self.meta_path.is_file():
            meta = json.loads(self.meta_path.read_text())
            recorded = int(meta["dim"])
            if recorded != self.dim:
                raise DataError(
                    f"{self.meta_path}: embeddings of {embedder!r} have dimension {recorded}, "
                    f"not {self.dim}; use another embedder name for the new model"
                )
            if meta.get("dtype", "float32") != dtype:
                raise DataError(
                    f"{self.meta_path}: embeddings of {embedder!r} are stored as "
                    f"{meta.get('dtype', 'float32')}, not {dtype}"
                )

    @classmethod
    def open(cls, conn: sqlite3.Connection, embedder: str) -> EmbeddingFile:
        """An existing embedder's file, its dimension read from the sidecar."""
        folder = store.embeddings_dir(conn)
        meta_path = folder / f"{embedder}.json"
        if not meta_path.is_file():
            if not folder.is_dir():
                raise _missing_folder(conn, folder)
            raise MissingInputError(
                f"no {embedder!r} embeddings in {folder} ({meta_path.name} is missing); "
                "run `hardood mine` first"
            )
        meta = json.loads(meta_path.read_text())
        return cls(conn, embedder, int(meta["dim"]), meta.get("dtype", "float32"))

    @classmethod
    def for_writing(
        cls, conn: sqlite3.Connection, embedder: str, dim: int, dtype: str = "float32"
    ) -> EmbeddingFile:
        """The file to append to: ``dtype`` for a new embedder, the recorded dtype for an old one."""
        meta_path = store.embeddings_dir(conn) / f"{embedder}.json"
        if meta_path.is_file():
            dtype = json.loads(meta_path.read_text()).get("dtype", "float32")
        return cls(conn, embedder, dim, dtype)

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")

    @property
    def row_bytes(self) -> int:
        return self.numpy_dtype.itemsize * self.dim

    @property
    def n_rows(self) -> int:
        """Complete rows in the file (a partly written last row does not count)."""
        return self.path.stat().st_size // self.row_bytes if self.path.is_file() else 0

    def append(self, sha256_list: Sequence[str], vectors: np.ndarray, sync: bool = True) -> int:
        """Append the vectors of images not yet in the file; returns how many were new.

        The vectors are written to the file and forced to disk (``os.fsync``) first, then their
        rows are inserted through the file's connection (committed with the caller's
        transaction). A sha256 already recorded is skipped. ``sync=False`` leaves the fsync to
        the caller, who must call ``sync_files`` before the transaction commits (``write_scored``
        syncs the files of one batch together).
        """
        vectors = np.asarray(vectors)
        keys = list(sha256_list)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f"{self.embedder}: expected vectors of shape (N, {self.dim}), got {vectors.shape}"
            )
        if len(keys) != len(vectors):
            raise ValueError(f"{self.embedder}: {len(keys)} sha256 keys for {len(vectors)} vectors")
        known = set(self._rows_of(keys))
        fresh: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in known and key not in fresh:
                fresh[key] = i
        if not fresh:
            return 0
        first_row = self._write_rows(vectors[list(fresh.values())], sync)
        self.conn.executemany(
            "INSERT OR IGNORE INTO embeddings(sha256, embedder, row) VALUES (?, ?, ?)",
            [(key, self.embedder, first_row + j) for j, key in enumerate(fresh)],
        )
        return len(fresh)

    def _write_rows(self, block: np.ndarray, sync: bool = True) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.meta_path.is_file():
            tmp = self.meta_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"dim": self.dim, "dtype": self.dtype, "order": "C"}))
            tmp.replace(self.meta_path)
        with open(self.path, "ab") as f:
            # one writer at a time; the lock also dies with a killed process
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                size = os.fstat(f.fileno()).st_size
                if size % self.row_bytes:  # a row half-written by an interrupted run
                    size -= size % self.row_bytes
                    os.ftruncate(f.fileno(), size)
                f.write(np.ascontiguousarray(block, dtype=self.numpy_dtype).tobytes())
                f.flush()
                if sync:
                    os.fsync(f.fileno())
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return size // self.row_bytes

    def sync(self) -> None:
        """Force the rows written so far to disk (``append(..., sync=False)``)."""
        if self.path.is_file():
            with open(self.path, "ab") as f:
                os.fsync(f.fileno())

    def _rows_of(self, keys: Sequence[str]) -> dict[str, int]:
        rows: dict[str, int] = {}
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = list(keys[start : start + _SQL_CHUNK])
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                f"SELECT sha256, row FROM embeddings WHERE embedder = ? AND sha256 IN ({marks})",
                [self.embedder, *chunk],
            ):
                rows[r["sha256"]] = int(r["row"])
        return rows

    def _memmap(self) -> np.ndarray:
        n = self.n_rows
        if n == 0:
            return np.zeros((0, self.dim), self.numpy_dtype)
        return np.memmap(self.path, dtype=self.numpy_dtype, mode="r", shape=(n, self.dim))

    @property
    def _read_dtype(self):
        return np.uint8 if self.dtype == "uint8" else np.float32

    def _check_rows(self, rows: np.ndarray, n_file: int) -> None:
        if not len(rows) or int(rows.max()) < n_file:
            return
        folder = self.path.parent
        if not folder.is_dir():
            raise _missing_folder(self.conn, folder)
        raise DataError(
            f"{self.path}: the store points at row {int(rows.max())} but the file holds "
            f"{n_file} rows; the file was replaced or truncated. Re-run `hardood mine` with the "
            "same checkpoint to re-embed the images"
        )

    def rows(self, sha256_list: Sequence[str]) -> np.ndarray:
        """The file rows of the given images, in that order (an error names a missing one)."""
        keys = list(sha256_list)
        rows_of = self._rows_of(keys)
        missing = [k for k in keys if k not in rows_of]
        if missing:
            raise DataError(
                f"{len(missing)} image(s) have no {self.embedder!r} embedding in "
                f"{store.db_path(self.conn)} (first: {missing[0]}); run `hardood mine` on them "
                "first"
            )
        rows = np.fromiter((rows_of[k] for k in keys), dtype=np.int64, count=len(keys))
        self._check_rows(rows, self.n_rows)
        return rows

    def load(self, sha256_list: Sequence[str]) -> np.ndarray:
        """The (N, dim) vectors of the given images, in that order (a copy in RAM).

        Float rows come back as float32, thumbnails as uint8. For millions of rows use ``view``.
        """
        rows = self.rows(sha256_list)
        data = self._memmap()
        return np.array(data[rows], dtype=self._read_dtype)

    def view(self, sha256_list: Sequence[str]) -> RowView:
        """The (N, dim) rows of the given images, in that order, read from disk on demand."""
        return RowView(self._memmap(), self.rows(sha256_list))

    def load_all(self) -> tuple[list[str], np.ndarray]:
        """Every recorded image and its vector, in file order.

        The vectors are the memory-mapped file itself when the table covers a prefix of the file
        (the usual case), so a million vectors cost no RAM until they are read.
        """
        found = self.conn.execute(
            "SELECT sha256, row FROM embeddings WHERE embedder = ? ORDER BY row", (self.embedder,)
        ).fetchall()
        keys = [r["sha256"] for r in found]
        rows = np.fromiter((r["row"] for r in found), dtype=np.int64, count=len(found))
        data = self._memmap()
        self._check_rows(rows, len(data))
        if np.array_equal(rows, np.arange(len(rows))):
            return keys, data[: len(rows)]
        return keys, RowView(data, rows)


class RowView:
    """Rows ``rows`` of a memory-mapped matrix, indexed like an array and read on demand.

    ``view[i]``, ``view[a:b]`` and ``view[index_array]`` return float32 (or uint8) copies of those
    rows only, so a subset of ten million stored vectors costs its row indices, not its vectors.
    """

    def __init__(self, data: np.ndarray, rows: np.ndarray):
        self.data = data
        self.rows = np.asarray(rows, dtype=np.int64)
        self.dtype = np.dtype(np.uint8 if data.dtype == np.uint8 else np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.data.shape[1])

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        wanted = self.rows[index]
        if np.ndim(wanted) == 0:
            return np.asarray(self.data[int(wanted)], dtype=self.dtype)
        order = np.argsort(wanted, kind="stable")  # read the file forwards
        out = np.empty((len(wanted), self.data.shape[1]), dtype=self.dtype)
        out[order] = self.data[wanted[order]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


def forget_missing_vectors(conn: sqlite3.Connection) -> dict[str, int]:
    """Drop ``embeddings`` rows whose vectors are not on disk; returns embedder -> rows dropped.

    A store copied without its ``NAME.embeddings/`` folder (or with a truncated file) keeps table
    rows that point at nothing. Dropping them makes those images pending again, so the next
    scoring pass re-embeds them instead of failing on a missing file.
    """
    folder = store.embeddings_dir(conn)
    dropped: dict[str, int] = {}
    with store.transaction(conn, immediate=True):
        for (embedder,) in conn.execute("SELECT DISTINCT embedder FROM embeddings").fetchall():
            meta_path = folder / f"{embedder}.json"
            n_rows = 0
            if meta_path.is_file():
                meta = json.loads(meta_path.read_text())
                dtype = meta.get("dtype", "float32")
                row_bytes = np.dtype(dtype).itemsize * int(meta["dim"])
                vectors = folder / f"{embedder}{DTYPE_SUFFIX[dtype]}"
                n_rows = vectors.stat().st_size // row_bytes if vectors.is_file() else 0
            gone = conn.execute(
                "DELETE FROM embeddings WHERE embedder = ? AND row >= ?", (embedder, n_rows)
            ).rowcount
            if gone:
                dropped[embedder] = gone
    return dropped


def gpu_available() -> bool:
    """Whether this faiss build has GPU support and sees a CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def ivf_list_count(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: ``IVF_LISTS_PER_SQRT_N * sqrt(n)``."""
    return max(1, int(IVF_LISTS_PER_SQRT_N * math.sqrt(n)))


def training_sample(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a deterministic sample of ``min(size, n)`` rows."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def build_index(
    vectors: np.ndarray,
    metric: str = "ip",
    use_gpu: bool | str = "auto",
    exact_limit: int = EXACT_SEARCH_LIMIT,
    nprobe: int = IVF_NPROBE,
) -> faiss.Index:
    """A faiss index holding ``vectors``: exact up to ``exact_limit`` rows, IVF beyond.

    Parameters
    ----------
    vectors
        (N, D) float32 (a memory map is fine; it is added in chunks).
    metric
        ``"ip"`` (inner product; cosine on L2-normalised vectors) or ``"l2"``.
    use_gpu
        ``"auto"``: a GPU index when faiss has GPU support and a device is present; ``True``
        requires one; ``False`` stays on the CPU.
    exact_limit
        Largest N searched exactly (``IndexFlat``). Beyond it ``IndexIVFFlat`` with
        ``ivf_list_count(N)`` lists, trained on a deterministic sample, searching ``nprobe`` lists.

    Returns
    -------
    faiss.Index
        Search with ``index.search(queries, k) -> (similarities, row indices)``.
    """
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
    if use_gpu not in ("auto", True, False):
        raise ValueError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
    if use_gpu is True and not gpu_available():
        raise ValueError("use_gpu=True, but this faiss has no GPU support or sees no CUDA device")
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {vectors.shape}")
    n, dim = vectors.shape
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if n <= exact_limit:
        index = faiss.IndexFlat(dim, faiss_metric)
    else:
        nlist = ivf_list_count(n)
        quantizer = faiss.IndexFlat(dim, faiss_metric)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        index.referenced_objects = [quantizer]  # keep the quantizer alive with the index
        sample = training_sample(n, nlist * IVF_TRAIN_POINTS_PER_LIST)
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        index.nprobe = min(nprobe, nlist)
    for start in progress(range(0, n, ADD_CHUNK), desc="indexing", unit="chunk"):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    if use_gpu is True or (use_gpu == "auto" and gpu_available()):
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
        index.referenced_objects = [resources]
    return index
