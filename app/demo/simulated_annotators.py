"""Simulated annotators for the demo and the benches: the pool truth stands in for people.

They go through exactly the store API the app uses (``curate.review``: sign in, lease a grid
page, record verdicts), so leases, overlap and verdict timing behave as with a real team. Each verdict is
the truth ("contains_foreground" when the image has an object) flipped with probability
``error_rate``; seconds per verdict are drawn around ``seconds_per_verdict``. Verdicts are stored
with ``source='simulated'`` so reports and exports can say plainly that they were simulated.
The world's truth also supplies gold items (``curate.review.gold``): a share ``gold_share`` of
the queue is marked gold before the review, so each annotator's accuracy on gold is measured.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from curate.review import annotators, gold, leases, verdicts
from wood_train.config import config_field
from wood_train.errors import DataError
from wood_train.progress import progress

FLIP = {"no_foreground": "contains_foreground", "contains_foreground": "no_foreground"}


@dataclass(frozen=True)
class SimulatedTeam:
    """A team of simulated annotators working the review queue in grid pages."""

    annotators: tuple[str, ...] = config_field(("sim-ana", "sim-ben"), "names")
    error_rate: float = config_field(0.03, "probability a verdict is flipped")
    seconds_per_verdict: float = config_field(1.1, "median seconds per verdict")
    page_size: int = config_field(12, "items per grid page")
    overlap: int = config_field(1, "verdicts per item (k)")
    limit: int | None = config_field(None, "stop after this many queue items")
    gold_share: float = config_field(0.05, "share of the queue marked gold from the world's truth")
    seed: int = config_field(0, "seed of errors and timings")


def truth_by_sha(
    conn: sqlite3.Connection, truth: pd.DataFrame, pool_dir: str | Path
) -> dict[str, bool]:
    """sha256 -> "contains a foreground object", joining the truth's file names to stored paths."""
    pool_dir = Path(pool_dir).resolve()
    has_object = {str(f): bool(isinstance(o, str) and o) for f, o in zip(truth.file, truth.objects)}
    out = {}
    rows = conn.execute(
        "SELECT p.sha256, p.relpath, r.path FROM image_paths p JOIN roots r USING (root_id)"
    ).fetchall()
    for row in rows:
        path = Path(row["path"]) / row["relpath"]
        if path.parent.resolve() == pool_dir and path.name in has_object:
            out[row["sha256"]] = has_object[path.name]
    return out


def simulate_review(
    conn: sqlite3.Connection,
    truth: pd.DataFrame,
    pool_dir: str | Path,
    team: SimulatedTeam = SimulatedTeam(),
) -> pd.DataFrame:
    """Review the queue with the simulated team; returns the verdicts recorded (one row each)."""
    contains = truth_by_sha(conn, truth, pool_dir)
    rng = np.random.default_rng(team.seed)
    names = [annotators.sign_in(conn, name) for name in team.annotators]
    queued = conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
    target = min(queued, team.limit) if team.limit else queued
    _mark_gold(conn, contains, target, team)
    records, done, clock = [], 0, 0.0
    bar = progress(total=target * team.overlap, desc="simulated review", unit="verdict")
    while done < target * team.overlap:
        progressed = False
        for name in names:
            page = leases.lease_next(conn, name, k=team.overlap, n=team.page_size)
            page = [item for item in page if item.rank <= target]
            if not page:
                continue
            given = []
            for item in page:
                if item.sha256 not in contains:
                    raise DataError(f"image {item.sha256[:12]} in the queue has no truth row")
                verdict = "contains_foreground" if contains[item.sha256] else "no_foreground"
                if rng.random() < team.error_rate:
                    verdict = FLIP[verdict]
                seconds = float(team.seconds_per_verdict * rng.lognormal(0.0, 0.35))
                given.append((item.sha256, verdict, seconds))
                clock += seconds
                records.append({"sha256": item.sha256, "annotator": name, "verdict": verdict,
                                "seconds": seconds, "truth_contains": contains[item.sha256]})  # fmt: skip
            verdicts.record_verdicts(conn, name, given, source="simulated")
            leases.release(conn, name)
            done += len(given)
            bar.update(len(given))
            progressed = True
        if not progressed:
            break
    bar.close()
    return pd.DataFrame(
        records, columns=["sha256", "annotator", "verdict", "seconds", "truth_contains"]
    )


def _mark_gold(
    conn: sqlite3.Connection,
    contains: dict[str, bool],
    target: int,
    team: SimulatedTeam,
) -> None:
    """Mark a random ``gold_share`` of the items to review gold, with the truth as the answer.
    Its own random stream: the verdicts, errors and timings stay those of the seed."""
    rng = np.random.default_rng([team.seed, 1])
    shas = [row[0] for row in conn.execute("SELECT sha256 FROM queue WHERE rank <= ?", (target,))]
    chosen = [s for s in shas if rng.random() < team.gold_share and s in contains]
    answers = {s: "contains_foreground" if contains[s] else "no_foreground" for s in chosen}
    if answers:
        gold.add_gold(conn, answers, source="truth", marked_by="world truth")
