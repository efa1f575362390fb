"""Gold items: images whose right answer is known, used to measure each annotator.

Where gold comes from: the lead marks an adjudicated item gold (``mark_gold``: the answer is the
lead's adjudication), or a known truth is loaded (``add_gold``, ``source='truth'``: the demo's
world truth). How it is used:

- ``leases.lease_next(..., gold_share=s)`` makes about a share ``s`` of each annotator's items gold
  checks: gold items they have not judged, shown like any other item. A gold check is not a vote.
- ``gold_accuracy(conn)``: each annotator's share of right answers on gold items, over every live
  verdict they gave on one (votes and gold checks alike). The lead sees it; the export can drop
  the votes of annotators below a threshold (``curate.export``'s ``min_gold_accuracy``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping

import pandas as pd

from curate import store
from curate.review.annotators import require_lead
from wood_train.errors import ConfigError, DataError
from wood_train.manifest.contract import VERDICTS

GOLD_SOURCES = ("lead", "truth")
GOLD_ACCURACY_COLUMNS = ("annotator", "gold_judged", "gold_correct", "gold_accuracy")


def mark_gold(conn: sqlite3.Connection, lead: str, sha256: str, now: float | None = None) -> str:
    """Make an adjudicated item gold, with the lead's adjudication as its answer; returns it."""
    lead = require_lead(conn, lead)
    with store.transaction(conn, immediate=True):
        row = conn.execute(
            "SELECT verdict FROM verdicts WHERE sha256 = ? AND source = 'lead' AND undone = 0 "
            "ORDER BY verdict_id DESC LIMIT 1",
            (sha256,),
        ).fetchone()
        if row is None:
            raise DataError(
                f"image {sha256[:12]} has no adjudication; adjudicate it before marking it gold"
            )
        conn.execute(
            "INSERT OR REPLACE INTO gold(sha256, verdict, source, marked_by, created_at) "
            "VALUES (?, ?, 'lead', ?, ?)",
            (sha256, row["verdict"], lead, time.time() if now is None else now),
        )
    return row["verdict"]


def unmark_gold(conn: sqlite3.Connection, lead: str, sha256: str) -> bool:
    """Take an item out of the gold set; returns whether it was gold."""
    require_lead(conn, lead)
    with store.transaction(conn):
        return bool(conn.execute("DELETE FROM gold WHERE sha256 = ?", (sha256,)).rowcount)


def add_gold(
    conn: sqlite3.Connection,
    answers: Mapping[str, str],
    source: str = "truth",
    marked_by: str | None = None,
    now: float | None = None,
) -> int:
    """Load known answers (sha256 -> verdict) as gold items; returns how many were added or
    updated. Items the store has never seen are refused."""
    if source not in GOLD_SOURCES:
        raise ConfigError(f"gold source must be one of {GOLD_SOURCES}, got {source!r}")
    for sha, verdict in answers.items():
        if verdict not in VERDICTS:
            raise ConfigError(f"gold image {sha[:12]}: {verdict!r} is not one of {VERDICTS}")
    t = time.time() if now is None else now
    with store.transaction(conn, immediate=True):
        unknown = [
            sha
            for sha in answers
            if conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (sha,)).fetchone() is None
        ]
        if unknown:
            raise DataError(
                f"{len(unknown)} gold image(s) are not in the store (first: {unknown[0][:12]})"
            )
        conn.executemany(
            "INSERT OR REPLACE INTO gold(sha256, verdict, source, marked_by, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(sha, verdict, source, marked_by, t) for sha, verdict in answers.items()],
        )
    return len(answers)


def gold_items(conn: sqlite3.Connection) -> pd.DataFrame:
    """Every gold item: sha256, verdict (its answer), source, marked_by, created_at."""
    rows = conn.execute(
        "SELECT sha256, verdict, source, marked_by, created_at FROM gold ORDER BY created_at, sha256"
    ).fetchall()
    columns = ["sha256", "verdict", "source", "marked_by", "created_at"]
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def gold_accuracy(conn: sqlite3.Connection) -> pd.DataFrame:
    """One row per annotator who judged a gold item: ``gold_judged``, ``gold_correct`` and
    ``gold_accuracy`` (their share), over their live verdicts on gold items (not the lead's)."""
    rows = conn.execute(
        "SELECT v.annotator, COUNT(*) AS judged, SUM(v.verdict = g.verdict) AS correct "
        "FROM verdicts v JOIN gold g ON g.sha256 = v.sha256 "
        "WHERE v.undone = 0 AND v.source != 'lead' GROUP BY v.annotator ORDER BY v.annotator"
    ).fetchall()
    return pd.DataFrame(
        [(r["annotator"], int(r["judged"]), int(r["correct"]), r["correct"] / r["judged"])
         for r in rows],
        columns=list(GOLD_ACCURACY_COLUMNS),
    )  # fmt: skip
