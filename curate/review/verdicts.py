"""Review: who looks at which queue item next, what they decided, and how far the team is.

A plain function API over the curation store, used by the annotation app and by the demo's
simulated annotators alike::

    name = sign_in(db, "ana")
    for item in lease_next(db, name, k=1, lease_seconds=300, n=12):
        record_verdict(db, name, item.sha256, "no_foreground", seconds=2.1)
    undo_last(db, name)            # marks the last verdict undone; the item comes back to "ana"
    progress_frame(db); progress_summary(db, k=1); agreement(db)
    release(db, name)              # give back every item "ana" holds

Team rules. An item is leased to one annotator at a time, until the lease expires. Each item gets
``k`` independent verdicts (the overlap). An annotator's next items are the ones they already hold,
then the highest-ranked queue items they have not judged, with fewer than ``k`` live verdicts and
no lease. Leasing runs inside ``BEGIN IMMEDIATE``, so two processes never hand out the same item.
Verdicts are never deleted: undo marks one ``undone`` and it stops counting everywhere.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curate import store
from curate.review.agreement import cohen_kappa, fleiss_kappa
from wood_train.errors import ConfigError, DataError
from wood_train.manifest.contract import VERDICTS

SOURCES = ("app", "simulated", "import")
DEFAULT_LEASE_SECONDS = 300.0
ACTIVE_WINDOW_S = 15 * 60  # annotators with a verdict this recent count towards the team's ETA
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")

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


def normalise_name(name: str) -> str:
    """An annotator name with runs of whitespace collapsed; raises ValueError if unusable."""
    cleaned = " ".join(str(name).split())
    if not _NAME.fullmatch(cleaned):
        raise ConfigError(
            f"annotator name {name!r}: use 1-64 letters, digits, spaces or . _ @ - "
            "(starting with a letter or digit)"
        )
    return cleaned


def sign_in(db_path: str | Path, name: str) -> str:
    """Register an annotator (once) and return the normalised name to use in every other call."""
    name = normalise_name(name)
    with store.connect(db_path) as conn:
        conn.execute(
            "INSERT OR IGNORE INTO annotators(name, created_at) VALUES (?, ?)",
            (name, store.now_iso()),
        )
    return name


def _require_annotator(conn, annotator: str) -> None:
    if conn.execute("SELECT 1 FROM annotators WHERE name = ?", (annotator,)).fetchone() is None:
        raise DataError(f"annotator {annotator!r} has not signed in (call sign_in first)")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")


def lease_next(
    db_path: str | Path,
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
    with store.connect(db_path, immediate=True) as conn:
        _require_annotator(conn, annotator)
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


def _items(conn, shas: list[str], annotator: str) -> list[ReviewItem]:
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


def class_name(classes: list[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else f"class {index}"


def _item(row, classes: list[str]) -> ReviewItem:
    top3: tuple[tuple[str, float], ...] = ()
    if row["probs"] is not None:
        probs = store.decode_probs(row["probs"])
        order = np.argsort(-probs, kind="stable")[:3]
        top3 = tuple((class_name(classes, int(i)), float(probs[i])) for i in order)
    return ReviewItem(
        sha256=row["sha256"],
        rank=int(row["rank"]),
        reason=row["reason"],
        top_class=class_name(classes, int(row["top_class"])),
        top_score=None if row["top_score"] is None else float(row["top_score"]),
        hardness_score=float(row["hardness_score"]),
        top3=top3,
        expires_at=row["expires_at"],
    )


def item_heatmap(db_path: str | Path, sha256: str) -> np.ndarray | None:
    """The stored top-class CAM (square uint8) of a queue item, or None if it has none."""
    with store.connect(db_path) as conn:
        row = conn.execute(
            "SELECT s.heatmap, s.heatmap_size FROM queue q "
            f"{SCORE_OF_QUEUE_ITEM} WHERE q.sha256 = ?",
            (sha256,),
        ).fetchone()
    if row is None or row["heatmap"] is None or not row["heatmap_size"]:
        return None
    return store.decode_heatmap(row["heatmap"], int(row["heatmap_size"]))


def record_verdicts(
    db_path: str | Path,
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
    with store.connect(db_path, immediate=True) as conn:
        _require_annotator(conn, annotator)
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
    db_path: str | Path,
    annotator: str,
    sha256: str,
    verdict: str,
    seconds: float | None = None,
    source: str = "app",
    now: float | None = None,
) -> int | None:
    """Commit one verdict; returns its id, or None if the annotator had already judged the item."""
    ids = record_verdicts(db_path, annotator, [(sha256, verdict, seconds)], source, now)
    return ids[0] if ids else None


def undo_last(
    db_path: str | Path,
    annotator: str,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: float | None = None,
) -> str | None:
    """Mark the annotator's latest live verdict undone and lease its item back to them.

    Returns the item's sha256, or None when there is nothing to undo. If another annotator holds
    the item by now, it is not taken from them; it comes back through the queue.
    """
    now = time.time() if now is None else now
    with store.connect(db_path, immediate=True) as conn:
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


def release(db_path: str | Path, annotator: str) -> int:
    """Give back every item the annotator holds (sign-out); returns how many."""
    with store.connect(db_path) as conn:
        return conn.execute("DELETE FROM leases WHERE annotator = ?", (annotator,)).rowcount


def verdict_count(db_path: str | Path, annotator: str) -> int:
    """How many live verdicts the annotator has given."""
    with store.connect(db_path) as conn:
        return conn.execute(
            "SELECT COUNT(*) FROM verdicts WHERE annotator = ? AND undone = 0", (annotator,)
        ).fetchone()[0]


def live_verdicts(db_path: str | Path) -> pd.DataFrame:
    """Every live verdict: verdict_id, sha256, annotator, verdict, created_at, seconds, source."""
    columns = ["verdict_id", "sha256", "annotator", "verdict", "created_at", "seconds", "source"]
    with store.connect(db_path) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(columns)} FROM verdicts WHERE undone = 0 ORDER BY verdict_id"
        ).fetchall()
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def progress_frame(db_path: str | Path) -> pd.DataFrame:
    """One row per annotator: verdicts (and per kind), median and total seconds, last verdict."""
    with store.connect(db_path) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM annotators ORDER BY name")]
    verdicts = live_verdicts(db_path)
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
    frame = pd.DataFrame(
        rows,
        columns=[
            "annotator",
            "verdicts",
            *VERDICTS,
            "median_seconds",
            "total_seconds",
            "last_verdict_at",
        ],
    )
    return frame.sort_values(["verdicts", "annotator"], ascending=[False, True], ignore_index=True)


def progress_summary(db_path: str | Path, k: int = 1, now: float | None = None) -> dict[str, Any]:
    """Team progress for overlap ``k``: items done (k live verdicts) and remaining, ETA.

    ``eta_seconds`` = verdicts still needed x median seconds per verdict / annotators active in the
    last 15 minutes (at least one); None before the first timed verdict.
    """
    _check_positive(k=k)
    now = time.time() if now is None else now
    with store.connect(db_path) as conn:
        counts = conn.execute(
            "SELECT COUNT(*) AS items, COALESCE(SUM(n >= :k), 0) AS done, "
            "COALESCE(SUM(n > 0 AND n < :k), 0) AS partial, "
            "COALESCE(SUM(MAX(0, :k - n)), 0) AS needed "
            f"FROM (SELECT {_LIVE_VERDICTS.format(item='q.sha256')} AS n FROM queue q)",
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


def agreement(db_path: str | Path) -> dict[str, Any]:
    """Agreement on items judged by two or more annotators.

    Returns ``method`` ("cohen" for exactly two annotators, "fleiss" for more, None without
    overlap), ``kappa`` (None when undefined), ``items`` (overlapping items), ``annotators``
    and ``all_agree`` (share of overlapping items where every verdict is the same).
    """
    verdicts = live_verdicts(db_path)
    # an annotator's latest live verdict per item (the API keeps one; be safe with imports)
    latest = verdicts.drop_duplicates(["sha256", "annotator"], keep="last")
    per_item = latest.groupby("sha256")["annotator"].transform("size")
    overlap = latest[per_item >= 2]
    names = sorted(overlap["annotator"].unique())
    result: dict[str, Any] = {
        "method": None,
        "kappa": None,
        "items": int(overlap["sha256"].nunique()),
        "annotators": names,
        "all_agree": None,
    }
    if overlap.empty:
        return result
    by_item = overlap.groupby("sha256")["verdict"]
    result["all_agree"] = float((by_item.nunique() == 1).mean())
    if len(names) == 2:
        table = overlap.pivot(index="sha256", columns="annotator", values="verdict")
        kappa = cohen_kappa(list(table[names[0]]), list(table[names[1]]))
        result["method"] = "cohen"
    else:
        counts = pd.crosstab(overlap["sha256"], overlap["verdict"]).reindex(
            columns=list(VERDICTS), fill_value=0
        )
        kappa = fleiss_kappa(counts.to_numpy())
        result["method"] = "fleiss"
    result["kappa"] = None if math.isnan(kappa) else float(kappa)
    return result
