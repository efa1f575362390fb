"""The lead's view of the team: who holds which items, who is idle, and one table per annotator.

A lead holds no leases and reads everything. ``held_items`` lists every live lease and gold check;
``annotator_status`` says who is working, idle (holding items without a verdict for a while) or
away (holding nothing); ``annotator_report`` joins that with each annotator's speed this round,
their agreement with the consensus and their accuracy on gold items.
"""

from __future__ import annotations

import sqlite3
import time

import pandas as pd

from curate import store
from curate.review.agreement import annotator_agreement
from curate.review.gold import gold_accuracy
from curate.review.progress import progress_frame

IDLE_AFTER_S = 120.0  # an annotator holding items without a verdict this long is idle
HELD_COLUMNS = (
    "annotator", "sha256", "queue_rank", "leased_at", "expires_at", "held_seconds", "gold_check",
)  # fmt: skip
STATUS_COLUMNS = ("annotator", "status", "held", "last_verdict_at", "last_leased_at")
WORKING, IDLE, AWAY = "working", "idle", "away"


def held_items(conn: sqlite3.Connection, now: float | None = None) -> pd.DataFrame:
    """Every item someone holds now (live leases and gold checks), longest held first."""
    now = time.time() if now is None else now
    rows = conn.execute(
        "SELECT l.annotator, l.sha256, ri.rank, l.leased_at, l.expires_at, 0 FROM leases l "
        "LEFT JOIN review_items ri ON ri.sha256 = l.sha256 WHERE l.expires_at > :now "
        "UNION ALL SELECT g.annotator, g.sha256, NULL, g.leased_at, g.expires_at, 1 "
        "FROM gold_checks g WHERE g.expires_at > :now ORDER BY 4, 1, 2",
        {"now": now},
    ).fetchall()
    frame = pd.DataFrame(
        [tuple(r) for r in rows],
        columns=["annotator", "sha256", "queue_rank", "leased_at", "expires_at", "gold_check"],
    )
    frame["held_seconds"] = now - frame["leased_at"]
    frame["gold_check"] = frame["gold_check"].astype(bool)
    return frame[list(HELD_COLUMNS)]


def annotator_status(
    conn: sqlite3.Connection, now: float | None = None, idle_after: float = IDLE_AFTER_S
) -> pd.DataFrame:
    """One row per annotator: ``status`` (working | idle | away), items held, the times of their
    last verdict and last lease (unix seconds)."""
    now = time.time() if now is None else now
    with store.transaction(conn):
        rows = conn.execute(
            "SELECT a.name, "
            "(SELECT COUNT(*) FROM leases l WHERE l.annotator = a.name AND l.expires_at > :now) + "
            "(SELECT COUNT(*) FROM gold_checks g WHERE g.annotator = a.name "
            " AND g.expires_at > :now), "
            "(SELECT MAX(created_at) FROM verdicts v WHERE v.annotator = a.name), "
            "(SELECT MAX(leased_at) FROM leases l WHERE l.annotator = a.name) "
            "FROM annotators a ORDER BY a.name",
            {"now": now},
        ).fetchall()
    out = []
    for name, held, last_verdict, last_lease in rows:
        recent = max(x for x in (last_verdict, last_lease, -1.0) if x is not None)
        if not held:
            status = AWAY
        elif now - recent > idle_after:
            status = IDLE
        else:
            status = WORKING
        out.append((name, status, int(held), last_verdict, last_lease))
    return pd.DataFrame(out, columns=list(STATUS_COLUMNS))


def annotator_report(
    conn: sqlite3.Connection, now: float | None = None, idle_after: float = IDLE_AFTER_S
) -> pd.DataFrame:
    """The lead's table, one row per annotator: status and items held, verdicts (all rounds and
    this round), median seconds per verdict this round, agreement with the consensus, and
    accuracy on gold items (None where there is nothing to measure yet)."""
    status = annotator_status(conn, now, idle_after)
    speed = progress_frame(conn)[["annotator", "verdicts", "round_verdicts", "median_seconds"]]
    agree = annotator_agreement(conn)
    gold = gold_accuracy(conn)
    report = status.merge(speed, on="annotator", how="left")
    report = report.merge(agree, on="annotator", how="left").merge(gold, on="annotator", how="left")
    for column in ("compared", "agreed", "gold_judged", "gold_correct"):
        report[column] = report[column].fillna(0).astype(int)
    return report.astype(object).where(report.notna(), None)
