"""Progress: how far the team is, per annotator and overall, and when the queue will be done.

A **round** is one build of the review queue (the ``runs`` row that wrote it): ``hardood mine``
starts a new round. The counts (done, partial, remaining) are over the queue of this round. The
speed behind the ETA (median seconds per verdict, active annotators) comes from this round's
*human* verdicts only (``source='app'``): simulated verdicts, imported ones and earlier rounds'
verdicts do not skew it.

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
from curate.review.leases import resolve_overlap
from curate.review.verdicts import HUMAN_SOURCE
from wood_train.manifest.contract import VERDICTS

ACTIVE_WINDOW_S = 15 * 60  # annotators with a verdict this recent count towards the team's ETA
PROGRESS_FRAME_COLUMNS = (
    "annotator", "verdicts", "round_verdicts", *VERDICTS, "median_seconds", "total_seconds",
    "last_verdict_at",
)  # fmt: skip


def current_round(conn: sqlite3.Connection) -> int | None:
    """The run that built the queue the store holds now (None while the queue is empty)."""
    row = conn.execute("SELECT MAX(run_id) FROM queue").fetchone()
    return None if row[0] is None else int(row[0])


def progress_frame(conn: sqlite3.Connection) -> pd.DataFrame:
    """One row per annotator: live verdicts (all rounds, and this round), each kind, this
    round's median and total seconds, and the time of the last verdict."""
    with store.transaction(conn):
        names = [row[0] for row in conn.execute("SELECT name FROM annotators ORDER BY name")]
        this_round = current_round(conn)
        rows = conn.execute(
            "SELECT annotator, verdict, created_at, seconds, queue_run_id IS ? AS this_round "
            "FROM verdicts WHERE undone = 0 AND source != 'lead'",
            (this_round,),
        ).fetchall()
    verdicts = pd.DataFrame(
        [tuple(r) for r in rows],
        columns=["annotator", "verdict", "created_at", "seconds", "this_round"],
    )
    out = []
    for name in names:
        mine = verdicts[verdicts["annotator"] == name]
        current = mine[mine["this_round"] == 1]
        seconds = current["seconds"].dropna()
        last = mine["created_at"].max() if len(mine) else None
        out.append(
            {
                "annotator": name,
                "verdicts": len(mine),
                "round_verdicts": len(current),
                **{v: int((mine["verdict"] == v).sum()) for v in VERDICTS},
                "median_seconds": float(seconds.median()) if len(seconds) else None,
                "total_seconds": float(seconds.sum()),
                "last_verdict_at": pd.to_datetime(last, unit="s", utc=True) if last else None,
            }
        )
    frame = pd.DataFrame(out, columns=list(PROGRESS_FRAME_COLUMNS))
    return frame.sort_values(["verdicts", "annotator"], ascending=[False, True], ignore_index=True)


def progress_summary(
    conn: sqlite3.Connection, k: int | None = None, now: float | None = None
) -> dict[str, Any]:
    """Team progress for overlap ``k`` (None: the team's overlap): items done (``k`` live votes),
    partial and remaining in this round's queue, and the ETA.

    ``eta_seconds`` = votes still needed x median seconds per verdict / annotators active in the
    last 15 minutes (at least one), where both come from this round's human verdicts only; None
    before the round's first timed human verdict.
    """
    now = time.time() if now is None else now
    with store.transaction(conn):
        k = resolve_overlap(conn, k)
        this_round = current_round(conn)
        counts = conn.execute(
            "SELECT COUNT(*) AS items, COALESCE(SUM(live_votes >= :k), 0) AS done, "
            "COALESCE(SUM(live_votes > 0 AND live_votes < :k), 0) AS partial, "
            "COALESCE(SUM(MAX(0, :k - live_votes)), 0) AS needed FROM review_items",
            {"k": k},
        ).fetchone()
        human = "undone = 0 AND source = ? AND queue_run_id IS ?"
        seconds = [
            row[0]
            for row in conn.execute(
                f"SELECT seconds FROM verdicts WHERE {human} AND seconds IS NOT NULL",
                (HUMAN_SOURCE, this_round),
            )
        ]
        round_verdicts = conn.execute(
            f"SELECT COUNT(*) FROM verdicts WHERE {human}", (HUMAN_SOURCE, this_round)
        ).fetchone()[0]
        live, undone = conn.execute(
            "SELECT COALESCE(SUM(undone = 0), 0), COALESCE(SUM(undone = 1), 0) FROM verdicts"
        ).fetchone()
        active = conn.execute(
            f"SELECT COUNT(DISTINCT annotator) FROM verdicts WHERE {human} AND created_at >= ?",
            (HUMAN_SOURCE, this_round, now - ACTIVE_WINDOW_S),
        ).fetchone()[0]
        leased = conn.execute(
            "SELECT COUNT(*) FROM leases WHERE expires_at > ?", (now,)
        ).fetchone()[0]
    median = statistics.median(seconds) if seconds else None
    needed = int(counts["needed"])
    return {
        "overlap": k,
        "round_run_id": this_round,
        "queue_items": int(counts["items"]),
        "done_items": int(counts["done"]),
        "partial_items": int(counts["partial"]),
        "remaining_items": int(counts["items"]) - int(counts["done"]),
        "verdicts_needed": needed,
        "verdicts": int(live),
        "round_human_verdicts": int(round_verdicts),
        "undone_verdicts": int(undone),
        "leased_items": int(leased),
        "median_seconds": median,
        "active_annotators": int(active),
        "eta_seconds": None if median is None else needed * median / max(1, active),
    }
