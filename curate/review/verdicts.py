"""Verdicts: record what an annotator decided, undo or change it, and read the live verdicts back.

Who may give a verdict (``submit_verdicts``). A verdict on an item counts when

- the annotator holds a live lease on it (or a gold check of it), or
- nobody else holds a live lease on it and it still has fewer than ``k`` live votes.

Anything else is refused, item by item, with a typed reason (``Refusal``): the other verdicts of
the same page are recorded all the same. A page left open past its lease whose items went to
someone else comes back as ``SubmitResult.stale``; ``SubmitResult.message`` is the sentence the
app shows ("This page expired ... here are fresh items"). A double submit is refused as
``already_judged`` and writes nothing twice.

What is kept with a verdict. The queue facts and scores the annotator saw (the queue's run, the
item's rank, the checkpoint that ranked it, its top class, top score, hardness and reason), so a
verdict outlives the queue: a re-mine replaces the queue, the export still has every round.

Verdicts are never deleted: undo marks one ``undone`` and it stops counting everywhere; a change
is a new verdict that ``replaces`` the old one, which is marked undone. Recording a verdict ends
the annotator's lease on the item; undoing one leases the item back to them. A verdict is a
**vote** unless it is a gold check (``gold_check``) or a lead's adjudication (``source='lead'``,
``curate.review.adjudication``).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from curate import store
from curate.review.annotators import normalise_name, signed_in
from curate.review.leases import (
    DEFAULT_LEASE_SECONDS,
    LIVE_VOTES,
    SCORE_OF_QUEUE_ITEM,
    resolve_overlap,
)
from wood_train.errors import ConfigError, DataError
from wood_train.manifest.contract import VERDICTS

SOURCES = ("app", "simulated", "import", "lead")
HUMAN_SOURCE = "app"  # verdicts people gave in the review app (progress and ETA count these)
FACT_COLUMNS = (
    "queue_run_id", "queue_rank", "checkpoint_sha256", "top_class", "top_score",
    "hardness_score", "reason",
)  # fmt: skip
LIVE_VERDICT_COLUMNS = (
    "verdict_id", "sha256", "annotator", "verdict", "created_at", "seconds", "source",
    "gold_check", *FACT_COLUMNS,
)  # fmt: skip

# why a verdict was refused; the first three mean the page the annotator saw is out of date
HELD_BY_OTHER, ENOUGH_VOTES, NOT_IN_QUEUE, ALREADY_JUDGED = (
    "held_by_other", "enough_votes", "not_in_queue", "already_judged",
)  # fmt: skip
STALE_REASONS = (HELD_BY_OTHER, ENOUGH_VOTES, NOT_IN_QUEUE)
_REASON_TEXT = {
    HELD_BY_OTHER: "someone else is judging this image now",
    ENOUGH_VOTES: "this image already has the verdicts it needs",
    NOT_IN_QUEUE: "this image is not in the review queue any more (it was re-mined)",
    ALREADY_JUDGED: "you already judged this image",
}

_FACTS_FROM_QUEUE = f"""
SELECT q.run_id, q.rank, COALESCE(s.checkpoint_sha256, r.checkpoint_sha256), q.top_class,
       s.top_score, q.hardness_score, q.reason
FROM queue q {SCORE_OF_QUEUE_ITEM} WHERE q.sha256 = :sha
"""
_FACTS_FROM_FIRST_VOTE = f"""
SELECT {", ".join(FACT_COLUMNS)} FROM verdicts
WHERE sha256 = :sha AND gold_check = 0 AND queue_run_id IS NOT NULL
ORDER BY verdict_id LIMIT 1
"""
_INSERT = (
    "INSERT INTO verdicts(sha256, annotator, verdict, created_at, seconds, source, gold_check, "
    f"replaces, {', '.join(FACT_COLUMNS)}) "
    "VALUES (:sha, :me, :verdict, :now, :seconds, :source, :gold, :replaces, "
    f"{', '.join(':' + c for c in FACT_COLUMNS)})"
)


@dataclass(frozen=True)
class Refusal:
    """A verdict that was not recorded, why (``reason``, one of ``_REASON_TEXT``'s keys), and a
    sentence for the annotator."""

    sha256: str
    reason: str
    message: str


@dataclass(frozen=True)
class SubmitResult:
    """What ``submit_verdicts`` did with each verdict of a page."""

    recorded: tuple[tuple[str, int], ...]  # (sha256, verdict_id), in the order given
    refused: tuple[Refusal, ...]

    @property
    def verdict_ids(self) -> list[int]:
        return [verdict_id for _, verdict_id in self.recorded]

    @property
    def stale(self) -> bool:
        """Some items had gone to someone else, got their votes or left the queue meanwhile."""
        return any(r.reason in STALE_REASONS for r in self.refused)

    @property
    def message(self) -> str | None:
        """What the app tells the annotator, or None when every verdict was recorded."""
        stale = [r for r in self.refused if r.reason in STALE_REASONS]
        if not stale:
            return None
        kept = len(self.recorded)
        saved = f"your other {kept} verdict(s) are saved" if kept else "nothing else was lost"
        return (
            f"This page expired: {len(stale)} image(s) were not recorded ({stale[0].message}); "
            f"{saved}. Here are fresh items."
        )


def _check_entries(entries: list[tuple[str, str, float | None]], source: str) -> None:
    if source not in SOURCES or source == "lead":
        raise ConfigError(f"verdict source must be one of {SOURCES[:3]}, got {source!r}")
    for sha, verdict, seconds in entries:
        if verdict not in VERDICTS:
            raise ConfigError(f"image {sha[:12]}: verdict {verdict!r} is not one of {VERDICTS}")
        if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
            raise ConfigError(f"image {sha[:12]}: seconds must be >= 0, got {seconds!r}")


def submit_verdicts(
    conn: sqlite3.Connection,
    annotator: str,
    verdicts: Iterable[tuple[str, str, float | None]],
    k: int | None = None,
    source: str = "app",
    now: float | None = None,
) -> SubmitResult:
    """Commit ``(sha256, verdict, seconds)`` triples in one short transaction.

    Each verdict is recorded or refused on its own (see the module docstring); nothing already
    recorded is lost. ``seconds`` None means "since the item was leased to this annotator". The
    annotator's lease on each judged item ends.

    Parameters
    ----------
    k
        Votes wanted per item; None: the team's overlap (``leases.review_overlap``).
    source
        ``app`` (people in the review app), ``simulated`` or ``import``.

    Examples
    --------
    >>> result = submit_verdicts(conn, "ana", [(sha, "no_foreground", 2.1)])  # doctest: +SKIP
    >>> result.stale, result.message  # doctest: +SKIP
    (False, None)
    """
    entries = list(verdicts)
    _check_entries(entries, source)
    me = signed_in(conn, annotator)
    k = resolve_overlap(conn, k)
    recorded: list[tuple[str, int]] = []
    refused: list[Refusal] = []
    with store.transaction(conn, immediate=True):
        t = time.time() if now is None else now
        for sha, verdict, seconds in entries:
            reason, gold, leased_at = _standing(conn, me, sha, k, t)
            if reason is not None:
                refused.append(Refusal(sha, reason, _REASON_TEXT[reason]))
                continue
            if seconds is None and leased_at is not None:
                seconds = max(0.0, t - leased_at)
            params = {"sha": sha, "me": me, "verdict": verdict, "now": t, "seconds": seconds,
                      "source": source, "gold": int(gold), "replaces": None}  # fmt: skip
            recorded.append((sha, _insert(conn, params)))
            conn.execute("DELETE FROM leases WHERE sha256 = ? AND annotator = ?", (sha, me))
            conn.execute("DELETE FROM gold_checks WHERE sha256 = ? AND annotator = ?", (sha, me))
    return SubmitResult(tuple(recorded), tuple(refused))


def _standing(
    conn: sqlite3.Connection, me: str, sha: str, k: int, now: float
) -> tuple[str | None, bool, float | None]:
    """(refusal reason or None, is a gold check, when ``me`` leased it) for one verdict."""
    if conn.execute(
        "SELECT 1 FROM verdicts WHERE sha256 = ? AND annotator = ? AND undone = 0", (sha, me)
    ).fetchone():
        return ALREADY_JUDGED, False, None
    check = conn.execute(
        "SELECT leased_at FROM gold_checks WHERE sha256 = ? AND annotator = ? AND expires_at > ?",
        (sha, me, now),
    ).fetchone()
    if check is not None:
        return None, True, check[0]
    if conn.execute("SELECT 1 FROM queue WHERE sha256 = ?", (sha,)).fetchone() is None:
        return NOT_IN_QUEUE, False, None
    holders = conn.execute(
        "SELECT annotator, leased_at FROM leases WHERE sha256 = ? AND expires_at > ?", (sha, now)
    ).fetchall()
    mine = [row["leased_at"] for row in holders if row["annotator"] == me]
    if mine:  # the holder's verdict counts: nobody else could add a vote while they held it
        return None, False, mine[0]
    if holders:
        return HELD_BY_OTHER, False, None
    if conn.execute(f"SELECT {LIVE_VOTES.format(item='?')}", (sha,)).fetchone()[0] >= k:
        return ENOUGH_VOTES, False, None
    lapsed = conn.execute(
        "SELECT leased_at FROM leases WHERE sha256 = ? AND annotator = ?", (sha, me)
    ).fetchone()
    return None, False, lapsed[0] if lapsed else None


def _insert(conn: sqlite3.Connection, params: dict) -> int:
    """Insert one verdict with the facts of the item as the annotator saw it: its queue row, or
    for an item no longer queued (a gold check, a change), the facts of its first vote."""
    facts = conn.execute(_FACTS_FROM_QUEUE, params).fetchone()
    if facts is None:
        facts = conn.execute(_FACTS_FROM_FIRST_VOTE, params).fetchone()
    values = dict(zip(FACT_COLUMNS, facts if facts is not None else [None] * len(FACT_COLUMNS)))
    return int(conn.execute(_INSERT, {**params, **values}).lastrowid)


class StalePageError(DataError):
    """Raised by ``record_verdicts``/``record_verdict`` when some verdicts were refused because the
    page was out of date; ``result`` says which were recorded (they are committed)."""

    def __init__(self, result: SubmitResult):
        self.result = result
        refused = [r for r in result.refused if r.reason in STALE_REASONS]
        if len(result.recorded) + len(result.refused) == 1:
            super().__init__(f"image {refused[0].sha256[:12]}: {refused[0].message}")
        else:
            super().__init__(result.message or "")


def record_verdicts(
    conn: sqlite3.Connection,
    annotator: str,
    verdicts: Iterable[tuple[str, str, float | None]],
    source: str = "app",
    now: float | None = None,
    k: int | None = None,
) -> list[int]:
    """``submit_verdicts`` for callers that want ids or an exception: returns the ids of the
    verdicts recorded (a double submit records nothing twice) and raises ``StalePageError``
    after committing the rest when some verdicts were refused as out of date."""
    result = submit_verdicts(conn, annotator, verdicts, k, source, now)
    if result.stale:
        raise StalePageError(result)
    return result.verdict_ids


def record_verdict(
    conn: sqlite3.Connection,
    annotator: str,
    sha256: str,
    verdict: str,
    seconds: float | None = None,
    source: str = "app",
    now: float | None = None,
    k: int | None = None,
) -> int | None:
    """Commit one verdict; returns its id, or None on a double submit. Raises
    ``StalePageError`` when the item went to someone else, got its votes or left the queue."""
    ids = record_verdicts(conn, annotator, [(sha256, verdict, seconds)], source, now, k)
    return ids[0] if ids else None


# ---- undo and change -----------------------------------------------------------------------


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
    me = signed_in(conn, annotator)
    row = conn.execute(
        "SELECT verdict_id FROM verdicts WHERE annotator = ? AND undone = 0 AND source != 'lead' "
        "ORDER BY verdict_id DESC LIMIT 1",
        (me,),
    ).fetchone()
    if row is None:
        return None
    undone = undo_verdicts(conn, me, [row[0]], lease_seconds, now)
    return undone[0] if undone else None


def undo_verdicts(
    conn: sqlite3.Connection,
    annotator: str,
    verdict_ids: Iterable[int],
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: float | None = None,
) -> list[str]:
    """Undo a whole page: mark these verdicts (the annotator's own, still live) undone and lease
    their items back to the annotator where nobody else holds them. Returns the items undone, in
    the order given."""
    me = signed_in(conn, annotator)
    ids = [int(i) for i in verdict_ids]
    undone = []
    with store.transaction(conn, immediate=True):
        t = time.time() if now is None else now
        for verdict_id in ids:
            row = conn.execute(
                "SELECT sha256, gold_check FROM verdicts WHERE verdict_id = ? AND annotator = ? "
                "AND undone = 0 AND source != 'lead'",
                (verdict_id, me),
            ).fetchone()
            if row is None:
                continue
            conn.execute("UPDATE verdicts SET undone = 1 WHERE verdict_id = ?", (verdict_id,))
            _lease_back(conn, me, row["sha256"], bool(row["gold_check"]), t, t + lease_seconds)
            undone.append(row["sha256"])
    return undone


def _lease_back(
    conn: sqlite3.Connection, me: str, sha: str, gold_check: bool, now: float, expires: float
) -> None:
    if gold_check:
        conn.execute(
            "INSERT OR REPLACE INTO gold_checks(sha256, annotator, leased_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (sha, me, now, expires),
        )
        return
    taken = conn.execute(
        "SELECT 1 FROM leases WHERE sha256 = ? AND annotator != ? AND expires_at > ?",
        (sha, me, now),
    ).fetchone()
    queued = conn.execute("SELECT 1 FROM queue WHERE sha256 = ?", (sha,)).fetchone()
    if queued and not taken:
        conn.execute(
            "INSERT OR REPLACE INTO leases(sha256, annotator, leased_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (sha, me, now, expires),
        )


def change_verdict(
    conn: sqlite3.Connection,
    annotator: str,
    verdict_id: int,
    verdict: str,
    seconds: float | None = None,
    now: float | None = None,
) -> int:
    """Change one of the annotator's live verdicts (the app's History view): a new verdict with
    the same facts ``replaces`` it and the old one is marked undone, in one transaction. The item
    keeps its number of votes, so no lease is needed. Returns the new verdict's id."""
    _check_entries([("", verdict, seconds)], "app")
    me = signed_in(conn, annotator)
    with store.transaction(conn, immediate=True):
        old = conn.execute(
            f"SELECT sha256, source, gold_check, {', '.join(FACT_COLUMNS)} FROM verdicts "
            "WHERE verdict_id = ? AND annotator = ? AND source != 'lead'",
            (verdict_id, me),
        ).fetchone()
        if old is None:
            raise DataError(f"verdict {verdict_id} is not one of {me!r}'s verdicts")
        changed = conn.execute(
            "UPDATE verdicts SET undone = 1 WHERE verdict_id = ? AND undone = 0", (verdict_id,)
        ).rowcount
        if not changed:
            raise DataError(
                f"verdict {verdict_id} was undone or changed already; change its latest version"
            )
        params = {"sha": old["sha256"], "me": me, "verdict": verdict,
                  "now": time.time() if now is None else now, "seconds": seconds,
                  "source": old["source"], "gold": old["gold_check"], "replaces": verdict_id,
                  **{c: old[c] for c in FACT_COLUMNS}}  # fmt: skip
        return int(conn.execute(_INSERT, params).lastrowid)


# ---- reading back --------------------------------------------------------------------------


def verdict_count(conn: sqlite3.Connection, annotator: str) -> int:
    """How many live verdicts the annotator has given."""
    return conn.execute(
        "SELECT COUNT(*) FROM verdicts WHERE annotator = ? AND undone = 0",
        (normalise_name(annotator),),
    ).fetchone()[0]


def live_verdicts(conn: sqlite3.Connection, votes_only: bool = False) -> pd.DataFrame:
    """Every live verdict with the facts it was given on (``LIVE_VERDICT_COLUMNS``), oldest first.

    ``votes_only`` leaves out gold checks and the lead's adjudications.
    """
    only = " AND gold_check = 0 AND source != 'lead'" if votes_only else ""
    rows = conn.execute(
        f"SELECT {', '.join(LIVE_VERDICT_COLUMNS)} FROM verdicts WHERE undone = 0{only} "
        "ORDER BY verdict_id"
    ).fetchall()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(LIVE_VERDICT_COLUMNS))


def recent_verdicts(conn: sqlite3.Connection, annotator: str, limit: int = 50) -> pd.DataFrame:
    """The annotator's latest live verdicts, newest first (the app's History view, also after a
    reload): verdict_id, sha256, verdict, created_at, queue_rank, reason."""
    rows = conn.execute(
        "SELECT verdict_id, sha256, verdict, created_at, queue_rank, reason FROM verdicts "
        "WHERE annotator = ? AND undone = 0 AND source != 'lead' "
        "ORDER BY verdict_id DESC LIMIT ?",
        (normalise_name(annotator), int(limit)),
    ).fetchall()
    columns = ["verdict_id", "sha256", "verdict", "created_at", "queue_rank", "reason"]
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)
