"""Register a candidate pool in the store: hash every file, remember every path, apply tags.

Each image is identified by the SHA-256 of its bytes, so an exact duplicate is stored once in
``images`` and each of its paths in ``image_paths``. Ingest does not decode: the scoring workers
do (``curate.score.scoring``), and a file they cannot decode is marked ``status='bad'`` there. Ingest
itself marks two kinds of bad image: zero-byte files (``empty_file``) and images whose tags name
a foreground class (``tag_excluded``, WOOD_SPEC section 2: the pool minus images already tagged
with a class).

A pool may contain anything. Files that are not read have no hash and are counted per reason,
with the first few paths shown: the app's containment rule is applied first (a symlink that
leads out of the pool root is ``outside_pool_root``, unless ``follow_symlinks`` registers its
target under the target's own folder), then only a regular file of at most ``max_file_bytes`` is
read (``not_regular_file`` for a FIFO, a device or a socket; ``file_too_large``), all through
``image_files.read_pool_file``. A file name that is not valid UTF-8 is stored losslessly
(``store.path_value``) and shown readably; one odd name never stops a run.

Re-running is cheap: a path already registered with the same byte size is not re-hashed
(``rehash=True`` forces it). Work is committed every ``batch_size`` files, so a killed ingest
keeps what it did and the next run continues.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Protocol

from curate import store
from curate.ingest.image_files import (
    BAD_PATH,
    DEFAULT_MAX_FILE_MB,
    MISSING,
    NOT_REGULAR,
    OUTSIDE_ROOT,
    TOO_LARGE,
    UNREADABLE,
    RefusedFile,
    locate_in_root,
    read_pool_file,
    resolve_root,
)
from curate.ingest.pool_sources import PoolFile
from wood_train.progress import progress

READ_THREADS = 4  # file reads and hashlib release the GIL; threads hide disk latency
NOT_READ = (MISSING, UNREADABLE, NOT_REGULAR, TOO_LARGE, OUTSIDE_ROOT, BAD_PATH)
MAX_PROBLEMS = 10


class TagSource(Protocol):
    """Tags for a pool file from outside it: ``TagTable`` (a CSV), ``LabelScan`` (OpenImages)."""

    def lookup(self, item: PoolFile) -> tuple[str, ...] | None: ...


@dataclass
class IngestReport:
    """What one ingest did. ``counts`` keys: listed, new_images, new_paths, duplicate_paths,
    unchanged, tag_excluded, empty_file, followed_symlinks, and the reasons a file was not read
    (``NOT_READ``). ``excluded_by`` counts tag-excluded images per foreground class."""

    counts: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # the first few files not read, and why
    excluded_by: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        c = self.counts
        not_read = {r: c[r] for r in NOT_READ if c[r]}
        text = (
            f"ingest: {c['listed']} files listed, {c['new_images']} new images, "
            f"{c['duplicate_paths']} exact-duplicate paths, {c['unchanged']} unchanged, "
            f"{c['tag_excluded']} tag-excluded, {sum(not_read.values())} not read"
        )
        if not_read:
            text += (
                " (" + ", ".join(f"{r.replace('_', ' ')} {n}" for r, n in not_read.items()) + ")"
            )
        return text

    def refuse(self, item: PoolFile, reason: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if len(self.problems) < MAX_PROBLEMS:
            shown = store.shown_path(item.path)
            self.problems.append(
                f"{shown} ({reason.replace('_', ' ')}{': ' + detail if detail else ''})"
            )


def _chunks(items: Iterable[PoolFile], size: int) -> Iterator[list[PoolFile]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _hash_file(path: Path, max_bytes: int) -> tuple[str | None, int, RefusedFile | None]:
    """(sha256 hex, n_bytes, refusal) of one file, read through ``read_pool_file``."""
    try:
        data = read_pool_file(path, max_bytes)
    except RefusedFile as refused:
        return None, 0, refused
    return hashlib.sha256(data).hexdigest(), len(data), None


def _contained(
    item: PoolFile, follow_symlinks: bool, roots: dict
) -> tuple[PoolFile | None, str | None]:
    """The item as it will be registered, or a refusal reason (the app's containment rule).

    With ``follow_symlinks`` a link out of the root is registered as its target, under the
    target's own folder, so the app (which serves only registered roots) can show it. ``roots``
    caches each root resolved (``resolve_root``) for the chunk.
    """
    if item.root not in roots:
        roots[item.root] = resolve_root(item.root)
    found, reason = locate_in_root(item.root, item.relpath, roots[item.root])
    if reason == OUTSIDE_ROOT and follow_symlinks:
        target = (item.root / item.relpath).resolve()
        return PoolFile(target.parent, target.name, item.tags), None
    return (item if found is not None else None), reason


def _excluding_class(tags: tuple[str, ...] | None, fg_tags: dict[str, str]) -> str | None:
    for tag in tags or ():
        if tag.lower() in fg_tags:
            return fg_tags[tag.lower()]
    return None


def _known_paths(conn: sqlite3.Connection, root_id: int, relpaths: list[str]) -> dict[str, tuple]:
    values = [store.path_value(r) for r in relpaths]
    marks = ",".join("?" * len(values))
    rows = conn.execute(
        f"SELECT p.relpath, p.sha256, i.n_bytes FROM image_paths p "
        f"JOIN images i ON i.sha256 = p.sha256 WHERE p.root_id = ? AND p.relpath IN ({marks})",
        (root_id, *values),
    ).fetchall()
    return {store.path_text(r["relpath"]): (r["sha256"], r["n_bytes"]) for r in rows}


def _ingest_chunk(
    conn: sqlite3.Connection,
    chunk: list[PoolFile],
    run_id: int | None,
    fg_tags: dict[str, str],
    options: dict,
    pool: ThreadPoolExecutor,
    report: IngestReport,
) -> None:
    usable, roots = [], {}
    for item in chunk:
        located, reason = _contained(item, options["follow_symlinks"], roots)
        if located is None:
            report.refuse(item, reason)
        else:
            report.counts["followed_symlinks"] += located is not item
            usable.append(located)
    chunk = usable
    # read and hash outside the write transaction, so annotators are never blocked on disk reads
    known: dict[tuple[Path, str], tuple] = {}
    with store.transaction(conn):
        for root in {f.root for f in chunk}:
            row = conn.execute(
                "SELECT root_id FROM roots WHERE path = ?", (store.path_value(root),)
            ).fetchone()
            if row is not None:
                rel = [f.relpath for f in chunk if f.root == root]
                found = _known_paths(conn, row["root_id"], rel)
                known.update({(root, k): v for k, v in found.items()})
    to_hash: list[PoolFile] = []
    resolved: list[tuple[PoolFile, str, int]] = []  # item, sha256, n_bytes
    for item in chunk:
        previous = known.get((item.root, item.relpath))
        if previous and not options["rehash"] and _same_size(item.path, previous[1]):
            resolved.append((item, previous[0], previous[1]))
            report.counts["unchanged"] += 1
        else:
            to_hash.append(item)
    # each thread hashes one contiguous slice: a future per file cost more than hashing a small
    # file, and the slices still overlap their disk reads
    size = -(-len(to_hash) // READ_THREADS) or 1
    slices = [to_hash[i : i + size] for i in range(0, len(to_hash), size)]
    hashed = pool.map(
        lambda part: [_hash_file(i.path, options["max_file_bytes"]) for i in part], slices
    )
    hashes = [h for part in hashed for h in part]
    for item, (sha, n_bytes, refused) in zip(to_hash, hashes):
        if refused is not None:
            report.refuse(item, refused.reason, refused.detail)
            continue
        resolved.append((item, sha, n_bytes))

    with store.transaction(conn, immediate=True):
        # only roots of files actually registered: a refused link's target folder is never one
        root_ids = {
            root: store.ensure_root(conn, root) for root in {f.root for f, _, _ in resolved}
        }
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
        if reason == "tag_excluded":
            report.excluded_by[excluded_by] += 1
    elif excluded_by:
        # tags seen now exclude content that an earlier, untagged path let in
        changed = conn.execute(
            "UPDATE images SET status = 'bad', bad_reason = 'tag_excluded' "
            "WHERE sha256 = ? AND status = 'ok'",
            (sha,),
        ).rowcount
        report.counts["tag_excluded"] += changed
        report.excluded_by[excluded_by] += changed
    tags = ";".join(item.tags) if item.tags is not None else None
    relpath = store.path_value(item.relpath)
    previous = conn.execute(
        "SELECT sha256 FROM image_paths WHERE root_id = ? AND relpath = ?", (root_id, relpath)
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
        (root_id, relpath, sha, tags),
    )


def ingest_pool(
    conn: sqlite3.Connection,
    files: Iterable[PoolFile],
    fg_tags: dict[str, str],
    run_id: int | None = None,
    tag_sources: Sequence[TagSource] = (),
    rehash: bool = False,
    batch_size: int = 512,
    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * 2**20),
    follow_symlinks: bool = False,
) -> IngestReport:
    """Hash and register every file of a pool; returns the counts.

    Parameters
    ----------
    conn
        A connection to an opened store (``store.open_store``, then ``store.connect``).
    files
        ``PoolFile`` items, e.g. ``pool_sources.iter_pool(folder)``; consumed lazily.
    fg_tags
        Lower-cased tag or MID -> foreground class (``pool_sources.foreground_tags``); an image
        with such a tag is stored with ``status='bad', bad_reason='tag_excluded'``.
    run_id
        The ``runs`` row recorded as ``images.added_run``.
    tag_sources
        Tags from outside the pool listing (a ``TagTable``, OpenImages' ``LabelScan``), merged
        with the tags a pool CSV already carries.
    max_file_bytes
        Larger files are refused before they are read (``file_too_large``).
    follow_symlinks
        Register a symlink that leads out of the pool root as its target (else it is refused).

    Examples
    --------
    >>> from curate.ingest.pool_sources import iter_pool
    >>> with store.connect("curation.db") as conn:  # doctest: +SKIP
    ...     report = ingest_pool(conn, iter_pool("pool/"), fg_tags={})
    >>> report.counts["new_images"]  # doctest: +SKIP
    """
    report = IngestReport()
    options = {
        "rehash": rehash,
        "max_file_bytes": max_file_bytes,
        "follow_symlinks": follow_symlinks,
    }
    bar = progress(desc="ingest", unit="file")
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for chunk in _chunks(files, batch_size):
            chunk = [_with_tags(item, tag_sources) for item in chunk]
            report.counts["listed"] += len(chunk)
            _ingest_chunk(conn, chunk, run_id, fg_tags, options, pool, report)
            bar.update(len(chunk))
    bar.close()
    return report


def _with_tags(item: PoolFile, sources: Sequence[TagSource]) -> PoolFile:
    extra = set()
    for source in sources:
        extra.update(source.lookup(item) or ())
    if not extra:
        return item
    merged = tuple(sorted(set(item.tags or ()) | extra))
    return PoolFile(item.root, item.relpath, merged)
