"""Leases: which queue items an annotator sees next, held for them alone until the lease ends.

Team rules. An item is leased to one annotator at a time, until the lease expires. Each item gets
``k`` independent verdicts (the overlap). An annotator's next items are the ones they already hold,
then the highest-ranked queue items they have not judged, with fewer than ``k`` live verdicts and
no lease. Leasing runs inside ``BEGIN IMMEDIATE``, so two processes never hand out the same item.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import numpy as np

from curate import store
from curate.review.annotators import require_signed_in
from wood_train.errors import ConfigError

DEFAULT_LEASE_SECONDS = 300.0

# Joins a queue row ``q`` to its run ``r`` and to the scores of the checkpoint that ranked it,
# or to the image's latest scores when that run recorded no checkpoint.
SCORE_OF_QUEUE_ITEM = """
JOIN runs r ON r.run_id = q.run_id
LEFT JOIN scores s ON s.sha256 = q.sha256 AND s.checkpoint_sha256 = COALESCE(
    r.checkpoint_sha256,
    (SELECT s2.checkpoint_sha256 FROM scores s2 WHERE s2.sha256 = q.sha256
     ORDER BY s2.run_id DESC LIMIT 1))
"""
_MY_LIVE_VERDICT = (
    "EXISTS (SELECT 1 FROM verdicts v WHERE v.sha256 = {item} AND v.annotator = :me "
    "AND v.undone = 0)"
)
_LIVE_VERDICTS = "(SELECT COUNT(*) FROM verdicts v WHERE v.sha256 = {item} AND v.undone = 0)"


@dataclass(frozen=True)
class ReviewItem:
    """A leased queue item and what its reviewer is shown."""

    sha256: str
    rank: int
    reason: str
    top_class: str
    top_score: float | None
    hardness_score: float
    top3: tuple[tuple[str, float], ...]
    expires_at: float | None


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")


def lease_next(
    conn: sqlite3.Connection,
    annotator: str,
    k: int = 1,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    n: int = 1,
    now: float | None = None,
) -> list[ReviewItem]:
    """Up to ``n`` items for ``annotator`` to judge, in queue order, leased to them.

    Items the annotator already holds come first (so a reload or a server restart shows the same
    item again), then fresh ones. Every lease the annotator holds is renewed to ``now +
    lease_seconds``. Returns fewer than ``n`` items (or none) when the queue is used up.
    """
    _check_positive(k=k, n=n, lease_seconds=lease_seconds)
    now = time.time() if now is None else now
    params = {"me": annotator, "k": int(k), "now": now, "expires": now + lease_seconds}
    with store.transaction(conn, immediate=True):
        require_signed_in(conn, annotator)
        conn.execute("DELETE FROM leases WHERE expires_at <= :now", params)
        conn.execute(
            "DELETE FROM leases WHERE annotator = :me AND ("
            "NOT EXISTS (SELECT 1 FROM queue q WHERE q.sha256 = leases.sha256) OR "
            f"{_MY_LIVE_VERDICT.format(item='leases.sha256')} OR "
            f"{_LIVE_VERDICTS.format(item='leases.sha256')} >= :k)",
            params,
        )
        conn.execute("UPDATE leases SET expires_at = :expires WHERE annotator = :me", params)
        held = [
            row[0]
            for row in conn.execute(
                "SELECT l.sha256 FROM leases l JOIN queue q ON q.sha256 = l.sha256 "
                "WHERE l.annotator = :me ORDER BY q.rank LIMIT :n",
                {**params, "n": int(n)},
            )
        ]
        fresh: list[str] = []
        if len(held) < n:
            fresh = [
                row[0]
                for row in conn.execute(
                    "SELECT q.sha256 FROM queue q "
                    "WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.sha256 = q.sha256) "
                    f"AND NOT {_MY_LIVE_VERDICT.format(item='q.sha256')} "
                    f"AND {_LIVE_VERDICTS.format(item='q.sha256')} < :k "
                    "ORDER BY q.rank LIMIT :wanted",
                    {**params, "wanted": int(n) - len(held)},
                )
            ]
            conn.executemany(
                "INSERT INTO leases(sha256, annotator, leased_at, expires_at) VALUES (?, ?, ?, ?)",
                [(sha, annotator, now, params["expires"]) for sha in fresh],
            )
        return _items(conn, held + fresh, annotator)


def release(conn: sqlite3.Connection, annotator: str) -> int:
    """Give back every item the annotator holds (sign-out); returns how many."""
    with store.transaction(conn):
        return conn.execute("DELETE FROM leases WHERE annotator = ?", (annotator,)).rowcount


def _items(conn: sqlite3.Connection, shas: list[str], annotator: str) -> list[ReviewItem]:
    if not shas:
        return []
    classes = store.get_classes(conn) or []
    rows = conn.execute(
        "SELECT q.sha256, q.rank, q.reason, q.top_class, q.hardness_score, s.top_score, s.probs, "
        "l.expires_at FROM queue q "
        f"{SCORE_OF_QUEUE_ITEM} "
        "LEFT JOIN leases l ON l.sha256 = q.sha256 AND l.annotator = ? "
        f"WHERE q.sha256 IN ({','.join('?' * len(shas))}) ORDER BY q.rank",
        (annotator, *shas),
    ).fetchall()
    return [_item(row, classes) for row in rows]


def _item(row: sqlite3.Row, classes: list[str]) -> ReviewItem:
    top3: tuple[tuple[str, float], ...] = ()
    if row["probs"] is not None:
        probs = store.decode_probs(row["probs"])
        order = np.argsort(-probs, kind="stable")[:3]
        top3 = tuple((store.class_name(classes, int(i)), float(probs[i])) for i in order)
    return ReviewItem(
        sha256=row["sha256"],
        rank=int(row["rank"]),
        reason=row["reason"],
        top_class=store.class_name(classes, int(row["top_class"])),
        top_score=None if row["top_score"] is None else float(row["top_score"]),
        hardness_score=float(row["hardness_score"]),
        top3=top3,
        expires_at=row["expires_at"],
    )


def item_heatmap(conn: sqlite3.Connection, sha256: str) -> np.ndarray | None:
    """The stored top-class CAM (square uint8) of a queue item, or None if it has none."""
    row = conn.execute(
        f"SELECT s.heatmap, s.heatmap_size FROM queue q {SCORE_OF_QUEUE_ITEM} WHERE q.sha256 = ?",
        (sha256,),
    ).fetchone()
    if row is None or row["heatmap"] is None or not row["heatmap_size"]:
        return None
    return store.decode_heatmap(row["heatmap"], int(row["heatmap_size"]))
