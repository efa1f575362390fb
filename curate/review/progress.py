"""Progress: how far the team is, per annotator and overall, and when the queue will be done.

Each reader takes one consistent view of the store (one read transaction, a WAL snapshot), so a
verdict committed while it reads cannot make its numbers disagree with each other.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from typing import Any

import pandas as pd

from curate import store
from curate.review.verdicts import live_verdicts
from wood_train.errors import ConfigError
from wood_train.manifest.contract import VERDICTS

ACTIVE_WINDOW_S = 15 * 60  # annotators with a verdict this recent count towards the team's ETA
PROGRESS_FRAME_COLUMNS = (
    "annotator", "verdicts", *VERDICTS, "median_seconds", "total_seconds", "last_verdict_at",
)  # fmt: skip


def progress_frame(conn: sqlite3.Connection) -> pd.DataFrame:
    """One row per annotator: verdicts (and per kind), median and total seconds, last verdict."""
    with store.transaction(conn):
        names = [row[0] for row in conn.execute("SELECT name FROM annotators ORDER BY name")]
        verdicts = live_verdicts(conn)
    rows = []
    for name in names:
        mine = verdicts[verdicts["annotator"] == name]
        seconds = mine["seconds"].dropna()
        last = mine["created_at"].max() if len(mine) else None
        rows.append(
            {
                "annotator": name,
                "verdicts": len(mine),
                **{v: int((mine["verdict"] == v).sum()) for v in VERDICTS},
                "median_seconds": float(seconds.median()) if len(seconds) else None,
                "total_seconds": float(seconds.sum()),
                "last_verdict_at": pd.to_datetime(last, unit="s", utc=True) if last else None,
            }
        )
    frame = pd.DataFrame(rows, columns=list(PROGRESS_FRAME_COLUMNS))
    return frame.sort_values(["verdicts", "annotator"], ascending=[False, True], ignore_index=True)


def progress_summary(
    conn: sqlite3.Connection, k: int = 1, now: float | None = None
) -> dict[str, Any]:
    """Team progress for overlap ``k``: items done (k live verdicts) and remaining, ETA.

    ``eta_seconds`` = verdicts still needed x median seconds per verdict / annotators active in the
    last 15 minutes (at least one); None before the first timed verdict.
    """
    if not k > 0:
        raise ConfigError(f"k must be positive, got {k!r}")
    now = time.time() if now is None else now
    with store.transaction(conn):
        counts = conn.execute(
            "SELECT COUNT(*) AS items, COALESCE(SUM(n >= :k), 0) AS done, "
            "COALESCE(SUM(n > 0 AND n < :k), 0) AS partial, "
            "COALESCE(SUM(MAX(0, :k - n)), 0) AS needed "
            "FROM (SELECT (SELECT COUNT(*) FROM verdicts v WHERE v.sha256 = q.sha256 "
            "AND v.undone = 0) AS n FROM queue q)",
            {"k": int(k)},
        ).fetchone()
        seconds = [
            row[0]
            for row in conn.execute(
                "SELECT seconds FROM verdicts WHERE undone = 0 AND seconds IS NOT NULL"
            )
        ]
        live, undone = conn.execute(
            "SELECT COALESCE(SUM(undone = 0), 0), COALESCE(SUM(undone = 1), 0) FROM verdicts"
        ).fetchone()
        active = conn.execute(
            "SELECT COUNT(DISTINCT annotator) FROM verdicts WHERE undone = 0 AND created_at >= ?",
            (now - ACTIVE_WINDOW_S,),
        ).fetchone()[0]
        leased = conn.execute(
            "SELECT COUNT(*) FROM leases WHERE expires_at > ?", (now,)
        ).fetchone()[0]
    median = statistics.median(seconds) if seconds else None
    needed = int(counts["needed"])
    return {
        "overlap": int(k),
        "queue_items": int(counts["items"]),
        "done_items": int(counts["done"]),
        "partial_items": int(counts["partial"]),
        "remaining_items": int(counts["items"]) - int(counts["done"]),
        "verdicts_needed": needed,
        "verdicts": int(live),
        "undone_verdicts": int(undone),
        "leased_items": int(leased),
        "median_seconds": median,
        "active_annotators": int(active),
        "eta_seconds": None if median is None else needed * median / max(1, active),
    }
