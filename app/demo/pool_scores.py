"""How each model scores the pool: hardness of hard OoDs, easy OoDs and contaminated images.

The demo report shows it twice, under the baseline and under W-OoD: a useful baseline scores hard
OoDs high and easy ones low (so the queue finds the former), and W-OoD brings the hard OoDs down
while contaminated images (which hold objects) stay high. The world's truth names each kind; it
is read here for the report only, never by mining.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from app.demo.charts import histogram_panels
from wood_train.world.properties import auroc
from wood_train.world.truth import read_pool_truth

KIND_LABELS = {"hard_ood": "hard OoD", "easy_ood": "easy OoD", "contaminated": "contaminated"}


def pool_hardness(
    conn: sqlite3.Connection, world, checkpoints: dict[str, str]
) -> dict[str, dict[str, np.ndarray]]:
    """model name -> pool kind label -> hardness scores of the pool files of that kind.

    ``checkpoints`` maps a model name to the weights hash its scores are stored under.
    """
    truth = read_pool_truth(world.root)
    kind_of = dict(zip(truth["file"], truth["kind"]))
    pool_dir = Path(world.pool_dir).resolve()
    rows = conn.execute(
        "SELECT s.checkpoint_sha256, s.hardness_score, p.relpath, r.path AS root FROM scores s "
        "JOIN image_paths p USING (sha256) JOIN roots r USING (root_id)"
    ).fetchall()
    found: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        path = Path(r["root"]) / r["relpath"]
        if path.parent.resolve() == pool_dir and path.name in kind_of:
            found.setdefault((r["checkpoint_sha256"], kind_of[path.name]), []).append(
                r["hardness_score"]
            )
    return {
        model: {label: np.asarray(found.get((sha, kind), []), np.float64)
                for kind, label in KIND_LABELS.items()}
        for model, sha in checkpoints.items()
    }  # fmt: skip


def score_table(scores: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per model: the median hardness of each kind and the AUROC of hard vs easy OoDs."""
    rows = []
    for model, kinds in scores.items():
        row = {"model": model}
        for label, values in kinds.items():
            row[f"median {label}"] = float(np.median(values)) if len(values) else float("nan")
        row["AUROC hard vs easy"] = auroc(kinds["hard OoD"], kinds["easy OoD"])
        rows.append(row)
    return pd.DataFrame(rows)


def score_histograms(scores: dict[str, dict[str, np.ndarray]], out: str | Path) -> Path:
    """One panel per model, the three kinds overlaid (share of each kind per bin)."""
    return histogram_panels(scores, out, "hardness score (top-class probability)")
