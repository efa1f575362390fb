"""Leases: which queue items an annotator sees next, held for them alone until the lease ends.

Team rules:

- An item is leased to one annotator at a time, until the lease expires (``lease_seconds``). A
  lease is renewed while its holder is active (``renew_leases``, and every ``lease_next``).
- Each item gets ``k`` independent votes (the overlap; ``None`` means the team's overlap recorded
  in the store, ``set_review_overlap``, default 1). An annotator never judges an item twice.
- An annotator's next items are the ones they hold, then the highest-ranked queue items with
  fewer than ``k`` live votes, no live lease and no verdict of theirs.
- With ``gold_share`` > 0, that share of an annotator's items are gold checks: items whose right
  answer is known (``curate.review.gold``), shown like any other item. A gold check is not a vote:
  it never counts towards the overlap or the export, only towards the annotator's gold accuracy.

How it stays fast under a team. The next candidates are read *outside* the write lock from
``review_items``, a small table that triggers keep in step with the queue and the verdicts and that
is indexed by (live votes, rank): finding the next open items is an index range, not a scan of the
queue. Inside ``BEGIN IMMEDIATE`` each candidate is then claimed with one conditional insert that
re-checks every rule against the base tables (still in the queue, no live lease, no verdict of
this annotator, fewer than ``k`` votes), so two processes never hand out the same item even when
both read the same candidates; a candidate lost to a race is replaced on the next try.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from dataclasses import dataclass

import numpy as np

from curate import store
from curate.review.annotators import signed_in
from wood_train.errors import ConfigError

DEFAULT_LEASE_SECONDS = 300.0
OVERLAP_META_KEY = "review_overlap"
_CLAIM_ATTEMPTS = 3  # reads of fresh candidates when other annotators took the ones read before
_CANDIDATE_SLACK = 8  # candidates read beyond the number wanted, for the ones lost to a race

# Joins a queue row ``q`` to its run ``r`` and to the scores of the checkpoint that ranked it,
# or to the image's latest scores when that run recorded no checkpoint.
SCORE_OF_QUEUE_ITEM = """
JOIN runs r ON r.run_id = q.run_id
LEFT JOIN scores s ON s.sha256 = q.sha256 AND s.checkpoint_sha256 = COALESCE(
    r.checkpoint_sha256,
    (SELECT s2.checkpoint_sha256 FROM scores s2 WHERE s2.sha256 = q.sha256
     ORDER BY s2.run_id DESC LIMIT 1))
"""
# Live votes of an item: verdicts not undone that are not gold checks.
LIVE_VOTES = (
    "(SELECT COUNT(*) FROM verdicts v WHERE v.sha256 = {item} AND v.undone = 0 "
    "AND v.gold_check = 0)"
)
MY_LIVE_VERDICT = (
    "EXISTS (SELECT 1 FROM verdicts v WHERE v.sha256 = {item} AND v.annotator = :me "
    "AND v.undone = 0)"
)
_CANDIDATES = f"""
SELECT ri.sha256, ri.rank FROM review_items ri
WHERE ri.live_votes = :level
  AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.sha256 = ri.sha256 AND l.expires_at > :now)
  AND NOT EXISTS (SELECT 1 FROM gold_checks g WHERE g.sha256 = ri.sha256 AND g.annotator = :me)
  AND NOT {MY_LIVE_VERDICT.format(item="ri.sha256")}
ORDER BY ri.rank LIMIT :limit
"""
_CLAIM = f"""
INSERT INTO leases(sha256, annotator, leased_at, expires_at)
SELECT :sha, :me, :now, :expires
WHERE EXISTS (SELECT 1 FROM queue q WHERE q.sha256 = :sha)
  AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.sha256 = :sha AND l.expires_at > :now)
  AND NOT EXISTS (SELECT 1 FROM gold_checks g WHERE g.sha256 = :sha AND g.annotator = :me)
  AND NOT {MY_LIVE_VERDICT.format(item=":sha")}
  AND {LIVE_VOTES.format(item=":sha")} < :k
"""


@dataclass(frozen=True)
class ReviewItem:
    """A leased item and what its reviewer is shown (the queue facts and the model's scores)."""

    sha256: str
    rank: int
    reason: str
    top_class: str
    top_score: float | None
    hardness_score: float
    top3: tuple[tuple[str, float], ...]
    expires_at: float | None
    gold_check: bool = False  # shown to measure the annotator; the app shows it like any other


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value!r}")


# ---- the team's overlap ---------------------------------------------------------------------


def review_overlap(conn: sqlite3.Connection) -> int:
    """The team's overlap ``k`` recorded in the store (``set_review_overlap``); 1 if never set."""
    return int(store.get_meta(conn, OVERLAP_META_KEY, "1"))


def set_review_overlap(conn: sqlite3.Connection, k: int) -> int:
    """Record the team's overlap (``hardood annotate --overlap k`` does it at launch), so calls
    that pass ``k=None`` and ``hardood export`` use the same one; returns ``k``."""
    if not (isinstance(k, int) and k >= 1):
        raise ConfigError(f"overlap must be a whole number >= 1, got {k!r}")
    with store.transaction(conn):
        store.set_meta(conn, OVERLAP_META_KEY, str(k))
    return k


def resolve_overlap(conn: sqlite3.Connection, k: int | None) -> int:
    """``k`` checked, or the team's overlap when ``k`` is None."""
    if k is None:
        return review_overlap(conn)
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise ConfigError(f"k (the overlap) must be a whole number >= 1, got {k!r}")
    return int(k)


# ---- leasing ---------------------------------------------------------------------------------


def lease_next(
    conn: sqlite3.Connection,
    annotator: str,
    k: int | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    n: int = 1,
    now: float | None = None,
    gold_share: float = 0.0,
) -> list[ReviewItem]:
    """Up to ``n`` items for ``annotator`` to judge, leased to them.

    Items the annotator already holds come first (a reload or a server restart shows the same
    page again), then fresh ones in queue order; gold checks (``gold_share``) sit among them.
    Every lease the annotator holds is renewed to ``now + lease_seconds``. Returns fewer than
    ``n`` items (or none) when the queue is used up.

    Parameters
    ----------
    k
        Votes wanted per item (the overlap); None: the team's overlap (``review_overlap``).
    gold_share
        Share in [0, 1) of the annotator's verdicts that should be gold checks.
    now
        Unix seconds (tests); the clock is read inside the write lock when None.
    """
    _check_positive(n=n, lease_seconds=lease_seconds)
    if not 0.0 <= gold_share < 1.0:
        raise ConfigError(f"gold_share must be in [0, 1), got {gold_share!r}")
    me = signed_in(conn, annotator)
    k = resolve_overlap(conn, k)
    n = int(n)
    for _ in range(_CLAIM_ATTEMPTS):
        read_at = time.time() if now is None else now
        wanted = n - len(_held(conn, me, read_at)) - len(_held_gold(conn, me, read_at))
        candidates = _candidates(conn, me, k, read_at, wanted + _CANDIDATE_SLACK) if wanted else []
        gold = _gold_candidates(conn, me, read_at, n) if gold_share and wanted > 0 else []
        due = _gold_due(conn, me, gold_share, n) if gold else 0
        with store.transaction(conn, immediate=True):
            t = time.time() if now is None else now
            expires = t + lease_seconds
            _tidy(conn, me, k, t)
            _renew_all(conn, me, t, expires)
            held_gold = _held_gold(conn, me, t)[:n]
            held = [sha for sha, _ in _held(conn, me, t)][: n - len(held_gold)]
            room = n - len(held) - len(held_gold)
            new_gold = gold[: min(room, due)]
            conn.executemany(
                "INSERT OR REPLACE INTO gold_checks(sha256, annotator, leased_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                [(sha, me, t, expires) for sha in new_gold],
            )
            room -= len(new_gold)
            claimed: list[str] = []
            for sha in candidates:
                if len(claimed) >= room:
                    break
                conn.execute("DELETE FROM leases WHERE sha256 = ? AND expires_at <= ?", (sha, t))
                params = {"sha": sha, "me": me, "now": t, "expires": expires, "k": k}
                if conn.execute(_CLAIM, params).rowcount:
                    claimed.append(sha)
        # done when the page is full, or when the candidates read were all there was
        if len(claimed) >= room or len(candidates) < wanted + _CANDIDATE_SLACK:
            break
    return _page(conn, me, held + claimed, held_gold + new_gold)


def _held(conn: sqlite3.Connection, me: str, now: float) -> list[tuple[str, int]]:
    """(sha256, rank) of the annotator's live leases on queue items, in rank order."""
    rows = conn.execute(
        "SELECT l.sha256, ri.rank FROM leases l JOIN review_items ri ON ri.sha256 = l.sha256 "
        "WHERE l.annotator = ? AND l.expires_at > ? ORDER BY ri.rank",
        (me, now),
    ).fetchall()
    return [(row[0], int(row[1])) for row in rows]


def _held_gold(conn: sqlite3.Connection, me: str, now: float) -> list[str]:
    """The annotator's live gold checks, oldest first."""
    rows = conn.execute(
        "SELECT sha256 FROM gold_checks WHERE annotator = ? AND expires_at > ? "
        "ORDER BY leased_at, sha256",
        (me, now),
    ).fetchall()
    return [row[0] for row in rows]


def _candidates(conn: sqlite3.Connection, me: str, k: int, now: float, limit: int) -> list[str]:
    """The best open items for ``me``, read without the write lock (one index range per level)."""
    found: list[tuple[int, str]] = []
    for level in range(k):
        params = {"level": level, "now": now, "me": me, "limit": limit}
        found += [(int(row[1]), row[0]) for row in conn.execute(_CANDIDATES, params)]
    return [sha for _, sha in sorted(found)[:limit]]


def _tidy(conn: sqlite3.Connection, me: str, k: int, now: float) -> None:
    """Inside the write lock: drop expired leases (index range) and the annotator's leases and
    gold checks that are finished (judged by them, out of the queue, or with ``k`` votes)."""
    conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM gold_checks WHERE expires_at <= ?", (now,))
    conn.execute(
        "DELETE FROM leases WHERE annotator = :me AND ("
        "NOT EXISTS (SELECT 1 FROM queue q WHERE q.sha256 = leases.sha256) OR "
        f"{MY_LIVE_VERDICT.format(item='leases.sha256')} OR "
        f"{LIVE_VOTES.format(item='leases.sha256')} >= :k)",
        {"me": me, "k": k},
    )
    conn.execute(
        "DELETE FROM gold_checks WHERE annotator = :me AND "
        f"{MY_LIVE_VERDICT.format(item='gold_checks.sha256')}",
        {"me": me},
    )


def _renew_all(conn: sqlite3.Connection, me: str, now: float, expires: float) -> None:
    for table in ("leases", "gold_checks"):
        conn.execute(
            f"UPDATE {table} SET expires_at = ? WHERE annotator = ? AND expires_at > ?",
            (expires, me, now),
        )


def renew_leases(
    conn: sqlite3.Connection,
    annotator: str,
    shas: list[str] | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    k: int | None = None,
    now: float | None = None,
) -> list[str]:
    """Keep the annotator's page: extend their leases (all, or those on ``shas``) to ``now +
    lease_seconds``, and take back an item of ``shas`` whose lease ran out if it is still free
    and still needs votes. The app calls this while the annotator is active on a page.

    Returns the items of ``shas`` (or every item) the annotator holds afterwards; an item missing
    from it went to someone else or got its votes, so the page should be refreshed.
    """
    _check_positive(lease_seconds=lease_seconds)
    me = signed_in(conn, annotator)
    k = resolve_overlap(conn, k)
    with store.transaction(conn, immediate=True):
        t = time.time() if now is None else now
        expires = t + lease_seconds
        _renew_all(conn, me, t, expires)
        for sha in shas or []:
            if _holds(conn, me, sha, t):
                continue
            conn.execute("DELETE FROM leases WHERE sha256 = ? AND expires_at <= ?", (sha, t))
            conn.execute(_CLAIM, {"sha": sha, "me": me, "now": t, "expires": expires, "k": k})
        held = {sha for sha, _ in _held(conn, me, t)}
        held |= {
            row[0]
            for row in conn.execute(
                "SELECT sha256 FROM gold_checks WHERE annotator = ? AND expires_at > ?", (me, t)
            )
        }
    return [sha for sha in shas if sha in held] if shas is not None else sorted(held)


def _holds(conn: sqlite3.Connection, me: str, sha: str, now: float) -> bool:
    for table in ("leases", "gold_checks"):
        if conn.execute(
            f"SELECT 1 FROM {table} WHERE sha256 = ? AND annotator = ? AND expires_at > ?",
            (sha, me, now),
        ).fetchone():
            return True
    return False


def release(conn: sqlite3.Connection, annotator: str) -> int:
    """Give back every item the annotator holds (sign-out); returns how many."""
    me = signed_in(conn, annotator)
    with store.transaction(conn):
        released = conn.execute("DELETE FROM leases WHERE annotator = ?", (me,)).rowcount
        conn.execute("DELETE FROM gold_checks WHERE annotator = ?", (me,))
    return released


# ---- gold checks -----------------------------------------------------------------------------


def _gold_candidates(conn: sqlite3.Connection, me: str, now: float, limit: int) -> list[str]:
    """Gold items ``me`` has not judged and does not hold, in an order of their own (so each
    annotator meets them in a different order), read without the write lock."""
    rows = conn.execute(
        "SELECT g.sha256 FROM gold g WHERE "
        f"NOT {MY_LIVE_VERDICT.format(item='g.sha256')} "
        "AND NOT EXISTS (SELECT 1 FROM gold_checks c WHERE c.sha256 = g.sha256 "
        "AND c.annotator = :me AND c.expires_at > :now) "
        "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.sha256 = g.sha256 "
        "AND l.annotator = :me AND l.expires_at > :now) "
        "AND (EXISTS (SELECT 1 FROM queue q WHERE q.sha256 = g.sha256) OR EXISTS "
        "(SELECT 1 FROM verdicts v WHERE v.sha256 = g.sha256 AND v.gold_check = 0))",
        {"me": me, "now": now},
    ).fetchall()
    order = sorted(rows, key=lambda row: hashlib.sha256(f"{me}/{row[0]}".encode()).digest())
    return [row[0] for row in order[:limit]]


def _gold_due(conn: sqlite3.Connection, me: str, gold_share: float, n: int) -> int:
    """How many gold checks keep ``me``'s share of gold at ``gold_share`` after ``n`` more items."""
    total, on_gold = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(sha256 IN (SELECT sha256 FROM gold)), 0) FROM verdicts "
        "WHERE annotator = ? AND undone = 0",
        (me,),
    ).fetchone()
    pending = conn.execute(
        "SELECT COUNT(*) FROM gold_checks WHERE annotator = ?", (me,)
    ).fetchone()[0]
    return max(0, math.floor(gold_share * (total + pending + n)) - on_gold - pending)


# ---- what the annotator is shown -------------------------------------------------------------


def _page(
    conn: sqlite3.Connection, me: str, leased: list[str], gold: list[str]
) -> list[ReviewItem]:
    """The page: leased items in rank order, gold checks at positions of their own (a hash of
    the annotator and the item), so a gold check is not always first or last."""
    items = _items(conn, leased, me)
    checks = {i.sha256: i for i in _items(conn, gold, me, gold_check=True)}
    for sha in gold:
        if sha in checks:
            slot = int(hashlib.sha256(f"{me}/{sha}".encode()).hexdigest(), 16) % (len(items) + 1)
            items.insert(slot, checks[sha])
    return items


def _items(
    conn: sqlite3.Connection, shas: list[str], annotator: str, gold_check: bool = False
) -> list[ReviewItem]:
    """Item details from the queue; an item no longer queued (a gold check) is shown with the
    facts and scores it was first judged with."""
    if not shas:
        return []
    classes = store.get_classes(conn) or []
    table = "gold_checks" if gold_check else "leases"
    marks = ",".join("?" * len(shas))
    rows = conn.execute(
        "SELECT q.sha256, q.rank, q.reason, q.top_class, q.hardness_score, s.top_score, s.probs, "
        f"l.expires_at FROM queue q {SCORE_OF_QUEUE_ITEM} "
        f"LEFT JOIN {table} l ON l.sha256 = q.sha256 AND l.annotator = ? "
        f"WHERE q.sha256 IN ({marks}) ORDER BY q.rank",
        (annotator, *shas),
    ).fetchall()
    found = {row["sha256"] for row in rows}
    missing = [sha for sha in shas if sha not in found]
    if missing:
        rows += conn.execute(
            "SELECT v.sha256, v.queue_rank AS rank, v.reason, v.top_class, v.hardness_score, "
            "v.top_score, s.probs, l.expires_at FROM verdicts v "
            "LEFT JOIN scores s ON s.sha256 = v.sha256 AND s.checkpoint_sha256 = v.checkpoint_sha256 "
            f"LEFT JOIN {table} l ON l.sha256 = v.sha256 AND l.annotator = ? "
            "WHERE v.verdict_id IN (SELECT MIN(verdict_id) FROM verdicts WHERE gold_check = 0 "
            f"AND top_class IS NOT NULL AND sha256 IN ({','.join('?' * len(missing))}) "
            "GROUP BY sha256)",
            (annotator, *missing),
        ).fetchall()
    return [_item(row, classes, gold_check) for row in rows]


def _item(row: sqlite3.Row, classes: list[str], gold_check: bool) -> ReviewItem:
    top3: tuple[tuple[str, float], ...] = ()
    if row["probs"] is not None:
        probs = store.decode_probs(row["probs"])
        order = np.argsort(-probs, kind="stable")[:3]
        top3 = tuple((store.class_name(classes, int(i)), float(probs[i])) for i in order)
    return ReviewItem(
        sha256=row["sha256"],
        rank=int(row["rank"] or 0),
        reason=row["reason"] or "",
        top_class=store.class_name(classes, int(row["top_class"])),
        top_score=None if row["top_score"] is None else float(row["top_score"]),
        hardness_score=float(row["hardness_score"] or 0.0),
        top3=top3,
        expires_at=row["expires_at"],
        gold_check=gold_check,
    )


def item_heatmap(conn: sqlite3.Connection, sha256: str) -> np.ndarray | None:
    """The stored top-class CAM (square uint8) of an item, or None if it has none: from the
    checkpoint that queued it, or, for an item no longer queued, the one it was judged with."""
    row = conn.execute(
        f"SELECT s.heatmap, s.heatmap_size FROM queue q {SCORE_OF_QUEUE_ITEM} WHERE q.sha256 = ?",
        (sha256,),
    ).fetchone()
    if row is None:
        row = conn.execute(
            "SELECT s.heatmap, s.heatmap_size FROM verdicts v JOIN scores s "
            "ON s.sha256 = v.sha256 AND s.checkpoint_sha256 = v.checkpoint_sha256 "
            "WHERE v.sha256 = ? ORDER BY v.verdict_id LIMIT 1",
            (sha256,),
        ).fetchone()
    if row is None or row["heatmap"] is None or not row["heatmap_size"]:
        return None
    return store.decode_heatmap(row["heatmap"], int(row["heatmap_size"]))
