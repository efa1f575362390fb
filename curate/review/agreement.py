"""Inter-annotator agreement: Cohen's kappa for two annotators, Fleiss' kappa for more, and each
annotator's agreement with the consensus.

``agreement_summary(conn)`` applies the kappas to the store's live votes (gold checks and the lead's
adjudications are not votes); ``annotator_agreement(conn)`` compares each annotator with the
consensus of the others; ``cohen_kappa`` and ``fleiss_kappa`` are plain functions over labels and
counts.

Both are chance-corrected agreement, kappa = (P_o - P_e) / (1 - P_e): 1 is perfect agreement, 0 is
what independent annotators with the same label frequencies would reach by chance. When every
rating falls in one category, P_e = 1 and kappa is undefined (NaN).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from curate import store
from curate.review.verdicts import live_verdicts
from wood_train.manifest.contract import VERDICTS


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two annotators' labels for the same items (Cohen 1960).

    P_o is the fraction of items both labelled the same; P_e = sum_c p1(c) * p2(c) with p1, p2
    each annotator's label frequencies.

    Example
    -------
    >>> round(cohen_kappa(list("yyyn"), list("yynn")), 3)
    0.5
    """
    if len(first) != len(second):
        raise ValueError(f"cohen_kappa needs paired labels, got {len(first)} and {len(second)}")
    n = len(first)
    if n == 0:
        return math.nan
    labels = sorted(set(first) | set(second))
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for a, b in zip(first, second):
        table[index[a], index[b]] += 1
    observed = np.trace(table) / n
    expected = float(table.sum(axis=1) @ table.sum(axis=0)) / n**2
    if math.isclose(expected, 1.0):
        return math.nan
    return float((observed - expected) / (1.0 - expected))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items x categories matrix of rating counts (Fleiss 1971).

    ``counts[i, j]`` is how many annotators put item i in category j. Items may have different
    numbers of ratings (each needs at least two): P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)),
    P_o = mean_i P_i, p_j = sum_i n_ij / sum_i n_i, P_e = sum_j p_j^2.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2:
        raise ValueError(
            f"fleiss_kappa needs an items x categories matrix, got shape {counts.shape}"
        )
    per_item = counts.sum(axis=1)
    if counts.shape[0] == 0:
        return math.nan
    if (per_item < 2).any():
        raise ValueError("fleiss_kappa needs at least two ratings per item")
    agreement = ((counts**2).sum(axis=1) - per_item) / (per_item * (per_item - 1))
    observed = float(agreement.mean())
    shares = counts.sum(axis=0) / per_item.sum()
    expected = float((shares**2).sum())
    if math.isclose(expected, 1.0):
        return math.nan
    return (observed - expected) / (1.0 - expected)


def agreement_summary(conn: sqlite3.Connection) -> dict[str, Any]:
    """Agreement on items judged by two or more annotators.

    Returns ``method`` ("cohen" for exactly two annotators, "fleiss" for more, None without
    overlap), ``kappa`` (None when undefined), ``items`` (overlapping items), ``annotators``
    and ``all_agree`` (share of overlapping items where every verdict is the same).
    """
    with store.transaction(conn):
        verdicts = live_verdicts(conn, votes_only=True)
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


ANNOTATOR_AGREEMENT_COLUMNS = ("annotator", "compared", "agreed", "agreement")


def consensus_of(verdicts: Sequence[str]) -> str | None:
    """The verdict most of ``verdicts`` share, or None on a tie or without verdicts.

    >>> consensus_of(["no_foreground", "no_foreground", "unsure"]), consensus_of(["a", "b"])
    ('no_foreground', None)
    """
    counts = pd.Series(list(verdicts), dtype=object).value_counts()
    if counts.empty or (len(counts) > 1 and counts.iloc[0] == counts.iloc[1]):
        return None
    return str(counts.index[0])


def annotator_agreement(conn: sqlite3.Connection) -> pd.DataFrame:
    """How often each annotator agrees with the consensus, one row per annotator.

    The consensus an annotator is compared with on an item is the lead's adjudication when there
    is one, else the verdict most of the *other* annotators gave it (leave-one-out; items where the
    others tie, or where nobody else voted, are not compared). Columns: ``annotator``,
    ``compared`` (items compared), ``agreed`` and ``agreement`` (``agreed / compared``, None when
    nothing was compared).
    """
    with store.transaction(conn):
        everything = live_verdicts(conn)
    votes = everything[(everything["gold_check"] == 0) & (everything["source"] != "lead")]
    votes = votes.drop_duplicates(["sha256", "annotator"], keep="last")
    adjudicated = (
        everything[everything["source"] == "lead"]
        .drop_duplicates("sha256", keep="last")
        .set_index("sha256")["verdict"]
        .to_dict()
    )
    by_item = {sha: list(zip(g["annotator"], g["verdict"])) for sha, g in votes.groupby("sha256")}
    tally: dict[str, list[int]] = {name: [0, 0] for name in sorted(votes["annotator"].unique())}
    for sha, given in by_item.items():
        for name, verdict in given:
            consensus = adjudicated.get(sha) or consensus_of([v for a, v in given if a != name])
            if consensus is None:
                continue
            tally[name][0] += 1
            tally[name][1] += int(verdict == consensus)
    rows = [
        (name, compared, agreed, agreed / compared if compared else None)
        for name, (compared, agreed) in tally.items()
    ]
    return pd.DataFrame(rows, columns=list(ANNOTATOR_AGREEMENT_COLUMNS))
