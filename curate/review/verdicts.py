"""Verdicts: record what an annotator decided, undo it, and read the live verdicts back.

Verdicts are never deleted: undo marks one ``undone`` and it stops counting everywhere. Recording a
verdict ends the annotator's lease on the item; undoing one leases the item back to them.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterable

import pandas as pd

from curate import store
from curate.review.annotators import require_signed_in
from curate.review.leases import DEFAULT_LEASE_SECONDS
from wood_train.errors import ConfigError, DataError
from wood_train.manifest.contract import VERDICTS

SOURCES = ("app", "simulated", "import")
LIVE_VERDICT_COLUMNS = (
    "verdict_id", "sha256", "annotator", "verdict", "created_at", "seconds", "source",
)  # fmt: skip


def record_verdicts(
    conn: sqlite3.Connection,
    annotator: str,
    verdicts: Iterable[tuple[str, str, float | None]],
    source: str = "app",
    now: float | None = None,
) -> list[int]:
    """Commit ``(sha256, verdict, seconds)`` triples in one transaction; returns the new ids.

    An item the annotator already holds a live verdict for is skipped (a double submit writes
    nothing twice). ``seconds`` None means "since the item was leased to this annotator". The
    annotator's lease on each judged item ends.
    """
    entries = list(verdicts)
    if source not in SOURCES:
        raise ValueError(f"verdict source must be one of {SOURCES}, got {source!r}")
    for sha, verdict, seconds in entries:
        if verdict not in VERDICTS:
            raise ConfigError(f"image {sha[:12]}: verdict {verdict!r} is not one of {VERDICTS}")
        if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
            raise ConfigError(f"image {sha[:12]}: seconds must be >= 0, got {seconds!r}")
    now = time.time() if now is None else now
    ids = []
    with store.transaction(conn, immediate=True):
        require_signed_in(conn, annotator)
        for sha, verdict, seconds in entries:
            if conn.execute("SELECT 1 FROM queue WHERE sha256 = ?", (sha,)).fetchone() is None:
                raise DataError(f"image {sha[:12]} is not in the review queue")
            if conn.execute(
                "SELECT 1 FROM verdicts WHERE sha256 = ? AND annotator = ? AND undone = 0",
                (sha, annotator),
            ).fetchone():
                continue
            if seconds is None:
                lease = conn.execute(
                    "SELECT leased_at FROM leases WHERE sha256 = ? AND annotator = ?",
                    (sha, annotator),
                ).fetchone()
                seconds = max(0.0, now - lease["leased_at"]) if lease else None
            cursor = conn.execute(
                "INSERT INTO verdicts(sha256, annotator, verdict, created_at, seconds, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (sha, annotator, verdict, now, seconds, source),
            )
            ids.append(int(cursor.lastrowid))
            conn.execute("DELETE FROM leases WHERE sha256 = ? AND annotator = ?", (sha, annotator))
    return ids


def record_verdict(
    conn: sqlite3.Connection,
    annotator: str,
    sha256: str,
    verdict: str,
    seconds: float | None = None,
    source: str = "app",
    now: float | None = None,
) -> int | None:
    """Commit one verdict; returns its id, or None if the annotator had already judged the item."""
    ids = record_verdicts(conn, annotator, [(sha256, verdict, seconds)], source, now)
    return ids[0] if ids else None


def undo_last(
    conn: sqlite3.Connection,
    annotator: str,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: float | None = None,
) -> str | None:
    """Mark the annotator's latest live verdict undone and lease its item back to them.

    Returns the item's sha256, or None when there is nothing to undo. If another annotator holds
    the item by now, it is not taken from them; it comes back through the queue.
    """
    now = time.time() if now is None else now
    with store.transaction(conn, immediate=True):
        row = conn.execute(
            "SELECT verdict_id, sha256 FROM verdicts WHERE annotator = ? AND undone = 0 "
            "ORDER BY verdict_id DESC LIMIT 1",
            (annotator,),
        ).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE verdicts SET undone = 1 WHERE verdict_id = ?", (row["verdict_id"],))
        taken = conn.execute(
            "SELECT 1 FROM leases WHERE sha256 = ? AND annotator != ? AND expires_at > ?",
            (row["sha256"], annotator, now),
        ).fetchone()
        if not taken:
            conn.execute(
                "INSERT OR REPLACE INTO leases(sha256, annotator, leased_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (row["sha256"], annotator, now, now + lease_seconds),
            )
        return row["sha256"]


def verdict_count(conn: sqlite3.Connection, annotator: str) -> int:
    """How many live verdicts the annotator has given."""
    return conn.execute(
        "SELECT COUNT(*) FROM verdicts WHERE annotator = ? AND undone = 0", (annotator,)
    ).fetchone()[0]


def live_verdicts(conn: sqlite3.Connection) -> pd.DataFrame:
    """Every live verdict: verdict_id, sha256, annotator, verdict, created_at, seconds, source."""
    rows = conn.execute(
        f"SELECT {', '.join(LIVE_VERDICT_COLUMNS)} FROM verdicts WHERE undone = 0 "
        "ORDER BY verdict_id"
    ).fetchall()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(LIVE_VERDICT_COLUMNS))
