"""Scoring results as Parquet shards in a run folder, and the one step that merges them.

Engines that score on other machines (``curate.score.ray_engine``) never write SQLite: each batch
becomes one Parquet shard (``ScoredBatch.to_arrow``) in the run folder, written under a temporary
name and renamed when complete, so a shard that exists is whole. ``merge_shards`` folds every
shard into the store with ``write_scored`` (idempotent by image hash and checkpoint hash) and
deletes it after its transaction commits. A crash between the two merges that shard again on the
next run, which changes nothing.

Folders are pyarrow filesystem URIs or local paths, so the run folder may be ``s3://``/``gs://``.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from pyarrow import fs as pafs

from curate import store
from curate.score.scored_batch import ScoredBatch, ScoreTarget, write_scored
from wood_train.progress import progress

SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".parquet"


def run_folder(conn: sqlite3.Connection, checkpoint_sha256: str) -> str:
    """The default run folder: ``<db stem>.shards/<checkpoint hash prefix>`` beside the store."""
    db = store.db_path(conn)
    return str(db.with_name(db.stem + ".shards") / checkpoint_sha256[:12])


def filesystem_of(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path within it of a URI or an absolute local path."""
    if "://" not in uri:
        uri = str(Path(uri).absolute())
    return pafs.FileSystem.from_uri(uri)


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """All bytes of a file named by a URI (``s3://``, ``gs://``, ``file://``) or a local path.

    A file larger than ``max_bytes`` raises ``OSError`` without being read.
    """
    filesystem, path = filesystem_of(uri)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"not a file ({info.type.name.lower()})")
    if max_bytes is not None and info.size is not None and info.size > max_bytes:
        raise OSError(f"{info.size} bytes, over the {max_bytes}-byte cap")
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def write_shard(batch: ScoredBatch, folder: str) -> str:
    """Write one batch as a new shard of ``folder``; returns its path. Atomic: temp, then rename."""
    filesystem, base = filesystem_of(folder)
    filesystem.create_dir(base, recursive=True)
    name = f"{SHARD_PREFIX}{uuid.uuid4().hex}{SHARD_SUFFIX}"
    tmp = f"{base}/.{name}.tmp"
    pq.write_table(batch.to_arrow(), tmp, filesystem=filesystem)
    filesystem.move(tmp, f"{base}/{name}")
    return f"{base}/{name}"


def list_shards(folder: str) -> list[str]:
    """Complete shards of ``folder`` (paths within its filesystem), sorted by name."""
    filesystem, base = filesystem_of(folder)
    selector = pafs.FileSelector(base, allow_not_found=True)
    return sorted(
        info.path
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
        and info.base_name.startswith(SHARD_PREFIX)
        and info.base_name.endswith(SHARD_SUFFIX)
    )


@dataclass
class MergeReport:
    """What a merge folded in: shards, decoded images and bad images (those may repeat rows
    already stored; ``write_scored`` keeps one)."""

    shards: int = 0
    images: int = 0
    bad: int = 0


def merge_shards(
    conn: sqlite3.Connection, folder: str, target: ScoreTarget, run_id: int
) -> MergeReport:
    """Fold every shard of ``folder`` into the store, one transaction per shard, then delete it.

    Idempotent: merging a shard twice (or one whose images are already stored) changes nothing.

    Examples
    --------
    >>> with store.connect("curation.db") as conn:  # doctest: +SKIP
    ...     merge_shards(conn, "curation.shards/0123abcd4567", target, run_id=3)
    """
    report = MergeReport()
    filesystem, _ = filesystem_of(folder)
    shards = list_shards(folder)
    if not shards:
        return report
    files: dict = {}
    bar = progress(total=len(shards), desc="merge", unit="shard")
    for path in shards:
        batch = ScoredBatch.from_arrow(pq.read_table(path, filesystem=filesystem))
        write_scored(conn, target, run_id, batch, files)
        filesystem.delete_file(path)  # after the commit: a crash here re-merges it harmlessly
        report.shards += 1
        report.images += len(batch.sha256)
        report.bad += len(batch.bad)
        bar.update(1)
    bar.close()
    return report
