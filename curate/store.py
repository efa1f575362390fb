"""The curation store: one SQLite file shared by ``mine``, ``queue``, the annotation app and export.

The store is boring on purpose: WAL mode, foreign keys on, a busy timeout, one short-lived
connection per unit of work and every write in a transaction::

    open_store("curation.db")                      # create or migrate, once per command
    with connect("curation.db") as conn:           # commits on success, rolls back on error
        conn.execute("INSERT INTO annotators VALUES (?, ?)", ("ana", now_iso()))

Schema (version 1): ``meta`` (``schema_version``, ``classes``), ``runs`` (one row per command with
its config, checkpoint hash, tool version, start/end, status and counts), ``roots`` (absolute
folders; the app serves images only from these), ``images`` (one row per distinct file content,
keyed by SHA-256; ``status`` ok|bad with ``bad_reason``), ``image_paths`` (every path of an image),
``scores`` (per image and checkpoint: class probabilities, ``hardness_score``, heatmap),
``embeddings`` (row index into ``<db stem>.embeddings/<embedder>.f32`` beside the DB),
``dup_groups``, ``queue``, ``annotators``, ``leases`` and ``verdicts``. Signals are named
``<signal>_score``. Run timestamps are ISO-8601 UTC strings; lease and verdict times are unix
seconds.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from wood_train.errors import DataError, MissingInputError

BUSY_TIMEOUT_S = 30.0
RUN_STATUSES = ("running", "done", "failed", "interrupted")

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs(
    run_id INTEGER PRIMARY KEY, command TEXT NOT NULL, config_json TEXT NOT NULL,
    checkpoint_sha256 TEXT, tool_version TEXT, started_at TEXT NOT NULL, ended_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    counts_json TEXT);
CREATE TABLE roots(root_id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL);
CREATE TABLE images(
    sha256 TEXT PRIMARY KEY, width INTEGER, height INTEGER, n_bytes INTEGER,
    status TEXT NOT NULL CHECK (status IN ('ok', 'bad')), bad_reason TEXT,
    added_run INTEGER REFERENCES runs(run_id));
CREATE TABLE image_paths(
    root_id INTEGER NOT NULL REFERENCES roots(root_id), relpath TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES images(sha256), tags TEXT,
    PRIMARY KEY(root_id, relpath));
CREATE INDEX image_paths_sha256 ON image_paths(sha256);
CREATE TABLE scores(
    sha256 TEXT NOT NULL REFERENCES images(sha256), checkpoint_sha256 TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(run_id), probs BLOB NOT NULL,
    top_class INTEGER NOT NULL, top_score REAL NOT NULL, hardness_score REAL NOT NULL,
    energy_score REAL, clip_fg_score REAL, heatmap BLOB, heatmap_size INTEGER,
    PRIMARY KEY(sha256, checkpoint_sha256));
CREATE INDEX scores_checkpoint ON scores(checkpoint_sha256);
CREATE TABLE embeddings(
    sha256 TEXT NOT NULL, embedder TEXT NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY(sha256, embedder));
CREATE TABLE dup_groups(
    sha256 TEXT PRIMARY KEY, representative TEXT NOT NULL, group_size INTEGER NOT NULL,
    dup_score REAL);
CREATE INDEX dup_groups_representative ON dup_groups(representative);
CREATE TABLE queue(
    sha256 TEXT PRIMARY KEY, rank INTEGER NOT NULL UNIQUE, run_id INTEGER NOT NULL,
    top_class INTEGER NOT NULL, hardness_score REAL NOT NULL, cluster INTEGER,
    reason TEXT NOT NULL);
CREATE INDEX queue_rank ON queue(rank);
CREATE TABLE annotators(name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE leases(
    sha256 TEXT NOT NULL, annotator TEXT NOT NULL, leased_at REAL NOT NULL,
    expires_at REAL NOT NULL, PRIMARY KEY(sha256, annotator));
CREATE TABLE verdicts(
    verdict_id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL,
    annotator TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN
        ('no_foreground', 'contains_foreground', 'unsure', 'bad_image')),
    created_at REAL NOT NULL, seconds REAL, undone INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT 'app');
CREATE INDEX verdicts_sha256 ON verdicts(sha256);
CREATE INDEX verdicts_annotator ON verdicts(annotator);
"""


def _migrate_to_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)


# Ordered: MIGRATIONS[i] takes a store from schema version i to i + 1. Append, never edit.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_to_v1]
SCHEMA_VERSION = len(MIGRATIONS)


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string (the format of ``runs`` timestamps)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _raw_connection(db_path: str | Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_S)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # WAL + NORMAL: a killed process never loses a committed transaction; only a power cut
        # can drop the last few, and the store is never corrupted (SQLite's documented trade-off)
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{db_path}: not a usable curation database ({exc})") from None
    return conn


@contextlib.contextmanager
def connect(db_path: str | Path, immediate: bool = False) -> Iterator[sqlite3.Connection]:
    """A short-lived connection for one unit of work; commits on success, rolls back on error.

    Parameters
    ----------
    db_path
        The store file; it must exist (``open_store`` creates it).
    immediate
        Take the write lock at the start (``BEGIN IMMEDIATE``). Use it for read-then-write work
        (leases, counters) so no other writer can slip in between the read and the write.
    """
    path = Path(db_path)
    if not path.is_file():
        raise MissingInputError(f"curation database not found: {path} (run `hardood mine` first)")
    conn = _raw_connection(path)
    try:
        if immediate:
            conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def _read_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row["value"]) if row else 0


def open_store(db_path: str | Path) -> Path:
    """Create the store or migrate it to ``SCHEMA_VERSION``; refuse a newer schema.

    Safe to call from several processes at once: migrations run under the write lock and re-read
    the version inside it. Returns the store's absolute path.
    """
    path = Path(db_path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _raw_connection(path)
    try:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            version = _read_version(conn)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{path}: not a usable curation database ({exc})") from None
        _refuse_newer(path, version)
        if version == SCHEMA_VERSION:
            return path
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _read_version(conn)
            _refuse_newer(path, version)
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](conn)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    finally:
        conn.close()
    return path


def open_existing(db_path: str | Path) -> Path:
    """``open_store`` for commands that read a store: refuse a path that is not there."""
    path = Path(db_path)
    if not path.is_file():
        raise MissingInputError(f"curation database not found: {path} (run `hardood mine` first)")
    return open_store(path)


def _refuse_newer(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise DataError(
            f"{path}: store has schema version {version}, but this hardood knows only up to "
            f"{SCHEMA_VERSION}; upgrade hardood to open it"
        )


def schema_version(db_path: str | Path) -> int:
    """The schema version recorded in the store (0 for an empty file)."""
    with connect(db_path) as conn:
        return _read_version(conn)


# ---- meta -----------------------------------------------------------------------------------


def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else default


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def get_classes(conn: sqlite3.Connection) -> list[str] | None:
    """The foreground class names the store was mined with, or None before the first run."""
    value = get_meta(conn, "classes")
    return json.loads(value) if value is not None else None


def ensure_classes(conn: sqlite3.Connection, class_names: list[str], source: str = "") -> None:
    """Record the class names on the first run; a later run with other classes is an error."""
    stored = get_classes(conn)
    if stored is None:
        set_meta(conn, "classes", json.dumps(list(class_names)))
    elif stored != list(class_names):
        raise DataError(
            f"{source or 'checkpoint'} has classes {list(class_names)}, but this store was mined "
            f"with {stored}; use a checkpoint with the same classes or a new --db"
        )


# ---- runs -----------------------------------------------------------------------------------


def start_run(
    db_path: str | Path,
    command: str,
    config: dict[str, Any],
    checkpoint_sha256: str | None = None,
    tool_version: str | None = None,
) -> int:
    """Insert a ``runs`` row with status 'running'; returns its ``run_id``."""
    if tool_version is None:
        from wood_train.config import package_versions

        tool_version = package_versions().get("hardood")
    with connect(db_path) as conn:
        cursor = conn.execute(
            "INSERT INTO runs(command, config_json, checkpoint_sha256, tool_version, started_at, "
            "status) VALUES (?, ?, ?, ?, ?, 'running')",
            (
                command,
                json.dumps(config, sort_keys=True, default=str),
                checkpoint_sha256,
                tool_version,
                now_iso(),
            ),
        )
        return int(cursor.lastrowid)


def finish_run(
    db_path: str | Path, run_id: int, status: str, counts: dict[str, Any] | None = None
) -> None:
    """Close a run: set its status (done | failed | interrupted), end time and counts."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
    with connect(db_path) as conn:
        conn.execute(
            "UPDATE runs SET status = ?, ended_at = ?, counts_json = ? WHERE run_id = ?",
            (status, now_iso(), json.dumps(counts or {}, sort_keys=True, default=str), run_id),
        )


# ---- roots and paths ------------------------------------------------------------------------


def ensure_root(conn: sqlite3.Connection, folder: str | Path) -> int:
    """The ``root_id`` of an absolute folder, registering it on first use."""
    path = str(Path(folder).resolve())
    conn.execute("INSERT OR IGNORE INTO roots(path) VALUES (?)", (path,))
    return int(conn.execute("SELECT root_id FROM roots WHERE path = ?", (path,)).fetchone()[0])


def embeddings_dir(db_path: str | Path) -> Path:
    """Folder of the embedding memmaps: ``<db stem>.embeddings/`` beside the store."""
    path = Path(db_path)
    return path.with_name(path.stem + ".embeddings")


# ---- blobs ----------------------------------------------------------------------------------


def encode_probs(probs: np.ndarray) -> bytes:
    """Class probabilities as float32 little-endian bytes (the ``scores.probs`` column)."""
    return np.asarray(probs, dtype="<f4").tobytes()


def decode_probs(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def encode_heatmap(heatmap: np.ndarray) -> bytes:
    """A square uint8 heatmap, row-major (the ``scores.heatmap`` column)."""
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2 or heatmap.shape[0] != heatmap.shape[1] or heatmap.dtype != np.uint8:
        raise ValueError(
            f"heatmap must be a square uint8 array, got {heatmap.shape} {heatmap.dtype}"
        )
    return np.ascontiguousarray(heatmap).tobytes()


def decode_heatmap(blob: bytes, size: int) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(size, size).copy()
