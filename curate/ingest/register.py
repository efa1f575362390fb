"""Register a candidate pool in the store: hash every file, remember every path, apply tags.

Each image is identified by the SHA-256 of its bytes, so an exact duplicate is stored once in
``images`` and each of its paths in ``image_paths``. Ingest does not decode: the scoring workers
do (``curate.score.scoring``), and a file they cannot decode is marked ``status='bad'`` there. Ingest
itself marks two kinds of bad image: zero-byte files (``empty_file``) and images whose tags name
a foreground class (``tag_excluded``, WOOD_SPEC section 2: the pool minus images already tagged
with a class). Files that cannot be read at all have no hash and are only counted.

Re-running is cheap: a path already registered with the same byte size is not re-hashed
(``rehash=True`` forces it). Work is committed every ``batch_size`` files, so a killed ingest
keeps what it did and the next run continues.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from curate import store
from curate.ingest.pool_sources import PoolFile, TagTable
from wood_train.progress import progress

READ_THREADS = 4  # file reads and hashlib release the GIL; threads hide disk latency


@dataclass
class IngestReport:
    """What one ingest did. ``counts`` keys: listed, new_images, new_paths, duplicate_paths,
    unchanged, tag_excluded, empty_file, missing_file, unreadable_file."""

    counts: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # first few unreadable/missing paths

    def summary(self) -> str:
        c = self.counts
        return (
            f"ingest: {c['listed']} files listed, {c['new_images']} new images, "
            f"{c['duplicate_paths']} exact-duplicate paths, {c['unchanged']} unchanged, "
            f"{c['tag_excluded']} tag-excluded, {c['missing_file'] + c['unreadable_file']} unreadable"
        )


def _chunks(items: Iterable[PoolFile], size: int) -> Iterator[list[PoolFile]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _hash_file(path: Path) -> tuple[str | None, int, str | None]:
    """(sha256 hex, n_bytes, error) of one file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, 0, "missing_file"
    except OSError:
        return None, 0, "unreadable_file"
    return hashlib.sha256(data).hexdigest(), len(data), None


def _excluding_class(tags: tuple[str, ...] | None, fg_tags: dict[str, str]) -> str | None:
    for tag in tags or ():
        if tag.lower() in fg_tags:
            return fg_tags[tag.lower()]
    return None


def _known_paths(conn: sqlite3.Connection, root_id: int, relpaths: list[str]) -> dict[str, tuple]:
    marks = ",".join("?" * len(relpaths))
    rows = conn.execute(
        f"SELECT p.relpath, p.sha256, i.n_bytes FROM image_paths p "
        f"JOIN images i ON i.sha256 = p.sha256 WHERE p.root_id = ? AND p.relpath IN ({marks})",
        (root_id, *relpaths),
    ).fetchall()
    return {r["relpath"]: (r["sha256"], r["n_bytes"]) for r in rows}


def _ingest_chunk(
    conn: sqlite3.Connection,
    chunk: list[PoolFile],
    run_id: int | None,
    fg_tags: dict[str, str],
    rehash: bool,
    pool: ThreadPoolExecutor,
    report: IngestReport,
) -> None:
    # read and hash outside the write transaction, so annotators are never blocked on disk reads
    known: dict[tuple[Path, str], tuple] = {}
    with store.transaction(conn):
        for root in {f.root for f in chunk}:
            row = conn.execute("SELECT root_id FROM roots WHERE path = ?", (str(root),)).fetchone()
            if row is not None:
                rel = [f.relpath for f in chunk if f.root == root]
                found = _known_paths(conn, row["root_id"], rel)
                known.update({(root, k): v for k, v in found.items()})
    to_hash: list[PoolFile] = []
    resolved: list[tuple[PoolFile, str, int]] = []  # item, sha256, n_bytes
    for item in chunk:
        previous = known.get((item.root, item.relpath))
        if previous and not rehash and _same_size(item.path, previous[1]):
            resolved.append((item, previous[0], previous[1]))
            report.counts["unchanged"] += 1
        else:
            to_hash.append(item)
    for item, (sha, n_bytes, error) in zip(
        to_hash, pool.map(_hash_file, [i.path for i in to_hash])
    ):
        if error:
            report.counts[error] += 1
            if len(report.problems) < 10:
                report.problems.append(f"{item.path} ({error.replace('_', ' ')})")
            continue
        resolved.append((item, sha, n_bytes))

    with store.transaction(conn, immediate=True):
        root_ids = {root: store.ensure_root(conn, root) for root in {f.root for f in chunk}}
        for item, sha, n_bytes in resolved:
            _register(conn, item, root_ids[item.root], sha, n_bytes, run_id, fg_tags, report)


def _same_size(path: Path, n_bytes: int | None) -> bool:
    try:
        return path.stat().st_size == n_bytes
    except OSError:
        return False


def _register(conn, item, root_id, sha, n_bytes, run_id, fg_tags, report) -> None:
    excluded_by = _excluding_class(item.tags, fg_tags)
    status, reason = "ok", None
    if n_bytes == 0:
        status, reason = "bad", "empty_file"
    elif excluded_by:
        status, reason = "bad", "tag_excluded"
    cursor = conn.execute(
        "INSERT OR IGNORE INTO images(sha256, n_bytes, status, bad_reason, added_run) "
        "VALUES (?, ?, ?, ?, ?)",
        (sha, n_bytes, status, reason, run_id),
    )
    if cursor.rowcount:
        report.counts["new_images"] += 1
        if reason:
            report.counts[reason] += 1
    elif excluded_by:
        # tags seen now exclude content that an earlier, untagged path let in
        changed = conn.execute(
            "UPDATE images SET status = 'bad', bad_reason = 'tag_excluded' "
            "WHERE sha256 = ? AND status = 'ok'",
            (sha,),
        ).rowcount
        report.counts["tag_excluded"] += changed
    tags = ";".join(item.tags) if item.tags is not None else None
    previous = conn.execute(
        "SELECT sha256 FROM image_paths WHERE root_id = ? AND relpath = ?", (root_id, item.relpath)
    ).fetchone()
    if previous is None:
        report.counts["new_paths"] += 1
        others = conn.execute(
            "SELECT 1 FROM image_paths WHERE sha256 = ? LIMIT 1", (sha,)
        ).fetchone()
        if others:
            report.counts["duplicate_paths"] += 1
    conn.execute(
        "INSERT INTO image_paths(root_id, relpath, sha256, tags) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(root_id, relpath) DO UPDATE SET sha256 = excluded.sha256, "
        "tags = COALESCE(excluded.tags, image_paths.tags)",
        (root_id, item.relpath, sha, tags),
    )


def ingest_pool(
    conn: sqlite3.Connection,
    files: Iterable[PoolFile],
    fg_tags: dict[str, str],
    run_id: int | None = None,
    tag_table: TagTable | None = None,
    rehash: bool = False,
    batch_size: int = 512,
) -> IngestReport:
    """Hash and register every file of a pool; returns the counts.

    Parameters
    ----------
    conn
        A connection to an opened store (``store.open_store``, then ``store.connect``).
    files
        ``PoolFile`` items, e.g. ``pool_sources.iter_pool(folder)``; consumed lazily.
    fg_tags
        Lower-cased tag -> foreground class (``pool_sources.foreground_tags``); an image with such
        a tag is stored with ``status='bad', bad_reason='tag_excluded'``.
    run_id
        The ``runs`` row recorded as ``images.added_run``.
    tag_table
        Tags from a separate CSV, merged with the tags a pool CSV already carries.

    Examples
    --------
    >>> from curate.ingest.pool_sources import iter_pool
    >>> with store.connect("curation.db") as conn:  # doctest: +SKIP
    ...     report = ingest_pool(conn, iter_pool("pool/"), fg_tags={})
    >>> report.counts["new_images"]  # doctest: +SKIP
    """
    report = IngestReport()
    bar = progress(desc="ingest", unit="file")
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for chunk in _chunks(files, batch_size):
            if tag_table is not None:
                chunk = [_with_table_tags(item, tag_table) for item in chunk]
            report.counts["listed"] += len(chunk)
            _ingest_chunk(conn, chunk, run_id, fg_tags, rehash, pool, report)
            bar.update(len(chunk))
    bar.close()
    return report


def _with_table_tags(item: PoolFile, table: TagTable) -> PoolFile:
    extra = table.lookup(item)
    if extra is None:
        return item
    merged = tuple(sorted(set(item.tags or ()) | set(extra)))
    return PoolFile(item.root, item.relpath, merged)
