"""The lead's disagreement queue: items whose votes differ, and the lead's decision on each.

An item needs the lead when its live votes are not all the same verdict (a 1-1 tie, a 2-1 split),
or, with ``include_unsure``, when someone voted ``unsure``. ``adjudicate`` records the lead's
verdict as a verdict of its own source (``source='lead'``, the lead's name as annotator): it is not
a vote, the export gives the item that verdict whatever the label policy
(``adjudicated_verdict`` in the manifest), and a new adjudication replaces the previous one.
"""

from __future__ import annotations

import sqlite3
import time

import pandas as pd

from curate import store
from curate.review.annotators import require_lead
from curate.review.verdicts import FACT_COLUMNS
from wood_train.errors import ConfigError, DataError
from wood_train.manifest.contract import VERDICTS

DISAGREEMENT_COLUMNS = (
    "sha256", *(f"votes_{v}" for v in VERDICTS), "votes", "queue_rank", "top_class",
    "top_score", "reason", "adjudicated", "adjudicated_by", "gold",
)  # fmt: skip


def disagreements(
    conn: sqlite3.Connection, include_unsure: bool = True, include_adjudicated: bool = True
) -> pd.DataFrame:
    """The disagreement queue, one row per item: its vote counts, who voted what (``votes``,
    e.g. ``"ana: no_foreground; bo: contains_foreground"``), the facts it was judged on, and the
    lead's adjudication so far. Items still waiting for the lead come first, then ties, then the
    hardest."""
    with store.transaction(conn):
        votes = conn.execute(
            "SELECT sha256, annotator, verdict FROM verdicts WHERE undone = 0 AND gold_check = 0 "
            "AND source != 'lead' ORDER BY verdict_id"
        ).fetchall()
        decided = {
            row["sha256"]: (row["verdict"], row["annotator"])
            for row in conn.execute(
                "SELECT sha256, verdict, annotator FROM verdicts WHERE undone = 0 "
                "AND source = 'lead' ORDER BY verdict_id"
            )
        }
        gold = {row[0] for row in conn.execute("SELECT sha256 FROM gold")}
        frame = pd.DataFrame([tuple(r) for r in votes], columns=["sha256", "annotator", "verdict"])
        kinds = frame.groupby("sha256")["verdict"].agg(lambda v: set(v))
        wanted = [
            sha
            for sha, seen in kinds.items()
            if len(seen) > 1 or (include_unsure and "unsure" in seen)
        ]
        if not include_adjudicated:
            wanted = [sha for sha in wanted if sha not in decided]
        facts = _first_facts(conn, wanted)
    classes = store.get_classes(conn) or []
    rows = []
    for sha in wanted:
        mine = frame[frame["sha256"] == sha]
        counts = mine["verdict"].value_counts()
        fact = facts.get(sha, {})
        verdict, by = decided.get(sha, (None, None))
        top = fact.get("top_class")
        rows.append(
            {
                "sha256": sha,
                **{f"votes_{v}": int(counts.get(v, 0)) for v in VERDICTS},
                "votes": "; ".join(f"{a}: {v}" for a, v in zip(mine["annotator"], mine["verdict"])),
                "queue_rank": fact.get("queue_rank"),
                "top_class": None if top is None else store.class_name(classes, int(top)),
                "top_score": fact.get("top_score"),
                "reason": fact.get("reason"),
                "adjudicated": verdict,
                "adjudicated_by": by,
                "gold": sha in gold,
            }
        )
    out = pd.DataFrame(rows, columns=list(DISAGREEMENT_COLUMNS))
    if out.empty:
        return out
    no, yes = out["votes_no_foreground"], out["votes_contains_foreground"]
    tie = (no == yes) & (no > 0)
    out = out.assign(_open=out["adjudicated"].isna(), _tie=tie)
    out = out.sort_values(
        ["_open", "_tie", "top_score", "sha256"], ascending=[False, False, False, True]
    )
    return out.drop(columns=["_open", "_tie"]).reset_index(drop=True)


def _first_facts(conn: sqlite3.Connection, shas: list[str]) -> dict[str, dict]:
    """The facts each item's first vote was given on (the queue that sent it to review)."""
    facts: dict[str, dict] = {}
    for start in range(0, len(shas), 500):
        chunk = shas[start : start + 500]
        for row in conn.execute(
            f"SELECT sha256, {', '.join(FACT_COLUMNS)} FROM verdicts WHERE verdict_id IN "
            "(SELECT MIN(verdict_id) FROM verdicts WHERE gold_check = 0 AND source != 'lead' "
            f"AND sha256 IN ({','.join('?' * len(chunk))}) GROUP BY sha256)",
            chunk,
        ):
            facts[row["sha256"]] = dict(row)
    return facts


def adjudicate(
    conn: sqlite3.Connection, lead: str, sha256: str, verdict: str, now: float | None = None
) -> int:
    """Record the lead's verdict on an item that has votes; returns the new verdict's id.

    The previous adjudication of the item, if any, is marked undone; the votes stay as given.
    """
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict {verdict!r} is not one of {VERDICTS}")
    lead = require_lead(conn, lead)
    with store.transaction(conn, immediate=True):
        first = conn.execute(
            f"SELECT {', '.join(FACT_COLUMNS)} FROM verdicts WHERE sha256 = ? AND undone = 0 "
            "AND gold_check = 0 AND source != 'lead' ORDER BY verdict_id LIMIT 1",
            (sha256,),
        ).fetchone()
        if first is None:
            raise DataError(f"image {sha256[:12]} has no votes to adjudicate")
        conn.execute(
            "UPDATE verdicts SET undone = 1 WHERE sha256 = ? AND source = 'lead' AND undone = 0",
            (sha256,),
        )
        cursor = conn.execute(
            "INSERT INTO verdicts(sha256, annotator, verdict, created_at, seconds, source, "
            f"gold_check, {', '.join(FACT_COLUMNS)}) VALUES (?, ?, ?, ?, NULL, 'lead', 0, "
            f"{', '.join('?' * len(FACT_COLUMNS))})",
            (sha256, lead, verdict, time.time() if now is None else now, *tuple(first)),
        )
        # a gold item the lead marked keeps the lead's latest answer
        conn.execute(
            "UPDATE gold SET verdict = ? WHERE sha256 = ? AND source = 'lead'", (verdict, sha256)
        )
        return int(cursor.lastrowid)
