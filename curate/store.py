"""The curation store shared by ``mine``, ``queue``, the annotation app and export.

A store is two things side by side: the SQLite file ``NAME.db`` and the folder
``NAME.embeddings/`` that holds the embedding vectors (``curate.neighbours.vector_index``). Copy or
move both together.

The store is boring on purpose: WAL mode, foreign keys on, a busy timeout. The caller of a unit of
work (a command step, an app rerun, a test) opens one connection and passes it down; library
functions take ``conn``, never a path. Every write runs in a short transaction::

    open_store("curation.db")                      # create or migrate, once per command
    with connect("curation.db") as conn:           # one connection, closed at exit
        with transaction(conn):                    # BEGIN ... COMMIT, ROLLBACK on error
            conn.execute("INSERT INTO annotators VALUES (?, ?)", ("ana", now_iso()))

Schema (version 2): ``meta`` (``schema_version``, ``classes``), ``runs`` (one row per command with
its config, checkpoint hash, tool version, start/end, status, counts, and the pid, host and
process start of the process that holds it), ``roots`` (absolute folders; the app serves images
only from these), ``images`` (one row per distinct file content, keyed by SHA-256; ``status``
ok|bad with ``bad_reason``), ``image_paths`` (every path of an image; a name that is not valid
UTF-8 is stored as its raw bytes, see ``path_value``),
``scores`` (per image and checkpoint: class probabilities, ``hardness_score``, heatmap),
``embeddings`` (row index into ``<db stem>.embeddings/<embedder>.f32`` beside the DB),
``dup_groups``, ``queue``, ``annotators``, ``leases`` and ``verdicts``. Signals are named
``<signal>_score``. Run timestamps are ISO-8601 UTC strings; lease and verdict times are unix
seconds.

Later migrations (``MIGRATIONS``, one function each, named for what it does): verdicts keep the
queue facts and scores they were given on (``queue_run_id``, ``queue_rank``, ``checkpoint_sha256``,
``top_class``, ``top_score``, ``hardness_score``, ``reason``) and say whether they are a
``gold_check`` and which verdict they ``replace``; ``review_items`` (each queue item's rank and
live vote count, kept by triggers, indexed for the next open items); ``leads``, ``gold`` and
``gold_checks``; annotator names folded to one spelling.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from curate.store_migrations import (
    add_leads_and_gold,
    add_review_items,
    add_verdict_facts,
    fold_annotator_names,
    index_embedding_rows,
)
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


def _migrate_to_v2(conn: sqlite3.Connection) -> None:
    """``runs`` records which process holds a run, so a killed one can be told apart."""
    for column in ("pid INTEGER", "host TEXT", "process_started TEXT"):
        conn.execute(f"ALTER TABLE runs ADD COLUMN {column}")


# Ordered: MIGRATIONS[i] takes a store from schema version i to i + 1. Append, never edit.
# Each later migration is a function named for what it does (``curate.store_migrations``).
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_to_v1,
    _migrate_to_v2,
    add_verdict_facts,
    add_review_items,
    add_leads_and_gold,
    fold_annotator_names,
    index_embedding_rows,
]
STORE_SCHEMA_VERSION = len(MIGRATIONS)


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string (the format of ``runs`` timestamps)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _raw_connection(db_file: str | Path) -> sqlite3.Connection:
    try:
        # isolation_level=None: autocommit; transactions are explicit (``transaction``)
        conn = sqlite3.connect(str(db_file), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # WAL + NORMAL: a killed process never loses a committed transaction; only a power cut
        # can drop the last few, and the store is never corrupted (SQLite's documented trade-off)
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{db_file}: not a usable curation database ({exc})") from None
    return conn


@contextlib.contextmanager
def connect(db_file: str | Path) -> Iterator[sqlite3.Connection]:
    """One connection for a unit of work (a command step, an app rerun, a test), closed at exit.

    The connection is in autocommit mode and opens no transaction: wrap every write, and every
    read that needs one consistent view, in ``transaction``. Rows come back as ``sqlite3.Row``.

    Parameters
    ----------
    db_file
        The store file; it must exist (``open_store`` creates it).

    Examples
    --------
    >>> with connect("curation.db") as conn:  # doctest: +SKIP
    ...     with transaction(conn):
    ...         conn.execute("INSERT INTO annotators VALUES (?, ?)", ("ana", now_iso()))
    """
    path = Path(db_file)
    if not path.is_file():
        raise MissingInputError(f"curation database not found: {path} (run `hardood mine` first)")
    conn = _raw_connection(path)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = False) -> Iterator[sqlite3.Connection]:
    """``BEGIN`` ... ``COMMIT``, or ``ROLLBACK`` on any exception.

    Parameters
    ----------
    conn
        A connection from ``connect``.
    immediate
        Take the write lock at the start (``BEGIN IMMEDIATE``). Use it for read-then-write work
        (leases, counters) so no other writer can slip in between the read and the write.

    A deferred transaction that only reads is one WAL snapshot: every read in it sees the store as
    it was at the first read, while other connections keep writing. Inside an open transaction this
    nests as a savepoint (its own rollback on error; the outer transaction's lock applies).
    """
    nested = conn.in_transaction
    if nested:
        begin, commit, rollback = "SAVEPOINT nested", "RELEASE nested", "ROLLBACK TO nested"
    elif immediate:
        begin, commit, rollback = "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"
    else:
        begin, commit, rollback = "BEGIN", "COMMIT", "ROLLBACK"
    try:
        conn.execute(begin)
        yield conn
        conn.execute(commit)
    except BaseException:
        if conn.in_transaction:
            conn.execute(rollback)
            if nested:
                conn.execute(commit)  # a savepoint stays open after ROLLBACK TO until released
        raise


def db_path(conn: sqlite3.Connection) -> Path:
    """The file of the store behind ``conn`` (for side folders such as ``NAME.embeddings/``)."""
    for row in conn.execute("PRAGMA database_list"):
        if row["name"] == "main" and row["file"]:
            return Path(row["file"])
    raise DataError("this connection is not to a store file (an in-memory database?)")


def _read_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row["value"]) if row else 0


def open_store(db_file: str | Path) -> Path:
    """Create the store or migrate it to ``STORE_SCHEMA_VERSION``; refuse a newer schema.

    Safe to call from several processes at once: migrations run under the write lock and re-read
    the version inside it. Runs left ``running`` by a process that no longer lives (killed with
    ``kill -9``, a power cut) are marked ``interrupted`` (``mark_interrupted_runs``). Returns the
    store's absolute path.
    """
    path = Path(db_file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _raw_connection(path)
    try:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            version = _read_version(conn)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{path}: not a usable curation database ({exc})") from None
        _refuse_newer(path, version)
        if version != STORE_SCHEMA_VERSION:
            with transaction(conn, immediate=True):
                version = _read_version(conn)
                _refuse_newer(path, version)
                for step in range(version, STORE_SCHEMA_VERSION):
                    MIGRATIONS[step](conn)
                set_meta(conn, "schema_version", str(STORE_SCHEMA_VERSION))
        mark_interrupted_runs(conn)
    finally:
        conn.close()
    return path


def open_existing(db_file: str | Path) -> Path:
    """``open_store`` for commands that read a store: refuse a path that is not there."""
    path = Path(db_file)
    if not path.is_file():
        raise MissingInputError(f"curation database not found: {path} (run `hardood mine` first)")
    return open_store(path)


def _refuse_newer(path: Path, version: int) -> None:
    if version > STORE_SCHEMA_VERSION:
        raise DataError(
            f"{path}: store has schema version {version}, but this hardood knows only up to "
            f"{STORE_SCHEMA_VERSION}; upgrade hardood to open it"
        )


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the store (0 for an empty file)."""
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


def class_name(classes: list[str], index: int) -> str:
    """The name of class ``index``, or ``"class N"`` when the store records no such class."""
    return classes[index] if 0 <= index < len(classes) else f"class {index}"


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
    conn: sqlite3.Connection,
    command: str,
    config: dict[str, Any],
    checkpoint_sha256: str | None = None,
    tool_version: str | None = None,
) -> int:
    """Insert a ``runs`` row with status 'running'; returns its ``run_id``."""
    if tool_version is None:
        from wood_train.config import package_versions

        tool_version = package_versions().get("hardood")
    mark_interrupted_runs(conn)
    with transaction(conn):
        cursor = conn.execute(
            "INSERT INTO runs(command, config_json, checkpoint_sha256, tool_version, started_at, "
            "status, pid, host, process_started) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
            (
                command,
                json.dumps(config, sort_keys=True, default=str),
                checkpoint_sha256,
                tool_version,
                now_iso(),
                os.getpid(),
                socket.gethostname(),
                process_started(os.getpid()),
            ),
        )
        return int(cursor.lastrowid)


def process_started(pid: int) -> str | None:
    """When process ``pid`` started, as a string that differs for a later process with the same pid.

    Linux: the boot id and the start time in clock ticks (``/proc/<pid>/stat`` field 22). None
    where ``/proc`` does not say (then only whether the pid lives can be checked).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return f"{boot}:{fields[19]}"


def _process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    return started is None or process_started(pid) in (None, started)


def mark_interrupted_runs(conn: sqlite3.Connection) -> list[int]:
    """Mark ``interrupted`` every ``running`` run of this host whose process is gone.

    A process is gone when its pid no longer exists or now belongs to a process that started
    later (pids are reused). Runs of other hosts, and runs recorded before the store kept pids,
    cannot be checked from here and are left alone. Returns the run ids it marked.
    """
    host = socket.gethostname()
    rows = conn.execute(
        "SELECT run_id, pid, process_started FROM runs "
        "WHERE status = 'running' AND host = ? AND pid IS NOT NULL",
        (host,),
    ).fetchall()
    dead = [r["run_id"] for r in rows if not _process_alive(r["pid"], r["process_started"])]
    if dead:
        with transaction(conn):
            conn.executemany(
                "UPDATE runs SET status = 'interrupted', ended_at = ? "
                "WHERE run_id = ? AND status = 'running'",
                [(now_iso(), run_id) for run_id in dead],
            )
    return dead


def finish_run(
    conn: sqlite3.Connection, run_id: int, status: str, counts: dict[str, Any] | None = None
) -> None:
    """Close a run: set its status (done | failed | interrupted), end time and counts."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
    with transaction(conn):
        conn.execute(
            "UPDATE runs SET status = ?, ended_at = ?, counts_json = ? WHERE run_id = ?",
            (status, now_iso(), json.dumps(counts or {}, sort_keys=True, default=str), run_id),
        )


# ---- roots and paths ------------------------------------------------------------------------


def path_value(text: str | Path) -> str | bytes:
    """How a file name is stored: as text, or as its raw bytes when it is not valid UTF-8.

    File names are bytes on POSIX; Python gives undecodable bytes back as lone surrogates
    (``caf\udce9.jpg`` for ``caf\xe9.jpg``), which SQLite text cannot hold. Such a name is kept
    losslessly as a BLOB in the same column (a BLOB never equals a TEXT value, so the two forms
    cannot collide); ``path_text`` reads either back.
    """
    text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


def path_text(value: str | bytes) -> str:
    """A stored file name (``path_value``) as Python's path string, usable with ``open``."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def shown_path(value: str | bytes | Path) -> str:
    """A file name for people: undecodable bytes written as ``\xe9`` (``caf\xe9.jpg``)."""
    raw = value if isinstance(value, bytes) else os.fsencode(str(value))
    return raw.decode("utf-8", errors="backslashreplace")


def ensure_root(conn: sqlite3.Connection, folder: str | Path) -> int:
    """The ``root_id`` of an absolute folder, registering it on first use."""
    path = path_value(Path(folder).resolve())
    conn.execute("INSERT OR IGNORE INTO roots(path) VALUES (?)", (path,))
    return int(conn.execute("SELECT root_id FROM roots WHERE path = ?", (path,)).fetchone()[0])


def embeddings_dir(conn: sqlite3.Connection) -> Path:
    """Folder of the embedding vectors: ``<db stem>.embeddings/`` beside the store's file."""
    return _embeddings_dir_of(db_path(conn))


def _embeddings_dir_of(db_file: Path) -> Path:
    return db_file.with_name(db_file.stem + ".embeddings")


def delete_store(db_file: str | Path) -> None:
    """Remove a store completely: its file, SQLite's ``-wal``/``-shm`` files and its embeddings
    folder (benches and tests that start from nothing)."""
    path = Path(db_file)
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        part.unlink(missing_ok=True)
    shutil.rmtree(_embeddings_dir_of(path), ignore_errors=True)


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
