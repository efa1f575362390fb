"""Order queue candidates: hardness first, then diversity within a class and per-class quotas.

Pure functions over a DataFrame of candidates (one row per near-duplicate group representative),
so the rule can be read and tested without a store:

1. ``rank_key = hardness_score - clip_fg_weight * clip_fg_score`` (``clip_fg_weight`` pushes down
   images CLIP thinks show a foreground class).
2. Hardness tiers: ``tier = floor(logit(rank_key) / hardness_tier)``. Probabilities saturate near
   1, so tiers are cut on the logit scale: with the default width 1.0 an image in a higher tier
   is at least e times more confidently "class" by odds. Harder tiers come first.
3. Diversity within a tier: images go round-robin over their class's K-means clusters
   (``cluster_rank`` is 0 for the hardest image of its cluster, 1 for the second, ...), so one
   scene type cannot flood the top of the queue, while a clearly harder image still comes first.
4. Quotas: walk the order; a top class that already holds
   ``ceil(max_class_share * queue_size)`` places is over its quota, and its further candidates
   wait until every other class has had its turn.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import pandas as pd

from wood_train.errors import ConfigError


def renumber_clusters(frame: pd.DataFrame) -> pd.DataFrame:
    """Per top class, number clusters 1..K by their hardest member; add ``cluster_rank``/``n_clusters``.

    Hardness ties (probabilities saturate at 1.0) are broken by ``energy_score`` when present.
    """
    frame = frame.copy()
    frame["_tie"] = frame["energy_score"].astype(float) if "energy_score" in frame else 0.0
    ordered = frame.sort_values(
        ["hardness_score", "_tie", "sha256"], ascending=[False, False, True]
    )
    frame["cluster_rank"] = ordered.groupby(["top_class", "cluster"]).cumcount()
    numbering = {}
    first_members = ordered.drop_duplicates(["top_class", "cluster"])
    for top_class, group in first_members.groupby("top_class", sort=False):
        for number, cluster in enumerate(group["cluster"], start=1):
            numbering[(top_class, cluster)] = number
    frame["cluster"] = [numbering[k] for k in zip(frame["top_class"], frame["cluster"])]
    frame["n_clusters"] = frame.groupby("top_class")["cluster"].transform("max")
    return frame


def hardness_tiers(rank_key: np.ndarray, width: float) -> np.ndarray:
    """``floor(logit(p) / width)`` of each key (probabilities clipped to [1e-6, 1 - 1e-6])."""
    if width <= 0:
        raise ConfigError(f"hardness_tier must be positive, got {width}")
    p = np.clip(np.asarray(rank_key, np.float64), 1e-6, 1 - 1e-6)
    return np.floor(np.log(p / (1 - p)) / width).astype(np.int64)


def order_candidates(
    frame: pd.DataFrame,
    queue_size: int,
    hardness_tier: float = 1.0,
    max_class_share: float = 0.5,
    clip_fg_weight: float = 0.0,
    always_keep: Collection[str] = (),
) -> pd.DataFrame:
    """Order and cut candidates into the queue; adds ``rank`` (1-based), ``rank_key``, ``tier``,
    ``over_quota``.

    Parameters
    ----------
    frame
        Columns ``sha256``, ``top_class``, ``hardness_score``, ``cluster`` (any ids, per class),
        optionally ``clip_fg_score``.
    queue_size
        Places in the queue; the rest are dropped, except ``always_keep``.
    always_keep
        sha256s kept even past ``queue_size``, at the place the same order gives them (the
        neighbours of confirmed hard OoDs with ``--expand-from-verdicts``).

    Examples
    --------
    >>> frame = pd.DataFrame({"sha256": list("abc"), "top_class": [0, 0, 1],
    ...                       "hardness_score": [0.99, 0.9, 0.7], "cluster": [0, 0, 0]})
    >>> order_candidates(frame, queue_size=2, max_class_share=0.5)["sha256"].tolist()
    ['a', 'c']
    """
    if frame.empty:
        return frame.assign(
            rank=[], rank_key=[], tier=[], over_quota=[], n_clusters=[], cluster_rank=[]
        )
    frame = renumber_clusters(frame)
    key = frame["hardness_score"].astype(float)
    if clip_fg_weight and "clip_fg_score" in frame:
        key = key - clip_fg_weight * frame["clip_fg_score"].fillna(0.0)
    frame["rank_key"] = key
    frame["tier"] = hardness_tiers(key.to_numpy(), hardness_tier)
    frame = frame.sort_values(
        ["tier", "cluster_rank", "rank_key", "_tie", "sha256"],
        ascending=[False, True, False, False, True],
    )
    quota = max(1, math.ceil(max_class_share * queue_size))
    taken: dict[int, int] = {}
    first, deferred = [], []
    for index, top_class in zip(frame.index, frame["top_class"]):
        if taken.get(top_class, 0) < quota:
            taken[top_class] = taken.get(top_class, 0) + 1
            first.append(index)
        else:
            deferred.append(index)
    ordered = frame.loc[first + deferred]
    kept = (np.arange(len(ordered)) < queue_size) | ordered["sha256"].isin(set(always_keep))
    ordered = ordered[kept].drop(columns="_tie")
    ordered["over_quota"] = np.isin(ordered.index, deferred)
    ordered["rank"] = np.arange(1, len(ordered) + 1)
    return ordered.reset_index(drop=True)


def reason_text(
    class_name: str,
    hardness_score: float,
    cluster: int | None = None,
    n_clusters: int | None = None,
    group_size: int = 1,
    clip_fg_score: float | None = None,
    over_quota: bool = False,
) -> str:
    """``"train 0.93 · cluster 4/20 · 3 near-duplicates"``: why an image is where it is."""
    parts = [f"{class_name} {hardness_score:.2f}"]
    if cluster is not None and n_clusters:
        parts.append(f"cluster {cluster}/{n_clusters}")
    if group_size > 1:
        others = group_size - 1
        parts.append(f"{others} near-duplicate{'s' if others > 1 else ''}")
    if clip_fg_score is not None and not pd.isna(clip_fg_score):
        parts.append(f"CLIP foreground {clip_fg_score:.2f}")
    if over_quota:
        parts.append(f"after other classes ({class_name} quota full)")
    return " · ".join(parts)
