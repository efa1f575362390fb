"""What makes a world's pool behave like a real pool: the measurable properties of issue "world v2".

Pure functions over the pool truth and a baseline's pool scores, so the test suite checks the
properties that need no training and ``benches/world_properties.py`` checks the rest:

- ``pool_mix``: the share of each pool kind (hard OoDs a minority, contamination 15-25%).
- ``ranking_properties``: how the baseline's hardness score (top-class probability) separates hard
  from easy OoDs (AUROC), how low easy OoDs score, and whether one class is a default answer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from wood_train.world.config import POOL_KINDS

# issue targets, also printed by the bench beside each measured value
TARGETS = {
    "val_map": (">=", 0.9),
    "val_spurious": (">=", 0.15),
    "hardness_auroc": (">=", 0.95),
    "easy_median_top_prob": ("<", 0.3),
    "easy_top_vote_share": ("<=", 0.4),
    "hard_share": ("<=", 0.15),
    "contaminated_share": ("between", (0.15, 0.25)),
}


def pool_mix(truth: pd.DataFrame) -> dict[str, float]:
    """Share of every pool kind over all pool files (near-duplicates count as pool images too),
    plus ``duplicate_share``, the fraction of files that are near-duplicates of another."""
    n = max(1, len(truth))
    mix = {f"{kind.removesuffix('_ood')}_share": float((truth["kind"] == kind).sum() / n)
           for kind in POOL_KINDS}  # fmt: skip
    mix["duplicate_share"] = float((truth["duplicate_of"] != "").sum() / n)
    return mix


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos = np.asarray(positive_scores, np.float64)
    neg = np.asarray(negative_scores, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    tied = np.searchsorted(neg, pos, side="right") - below
    u = (below + 0.5 * tied).sum()
    return float(u / (len(pos) * len(neg)))


def ranking_properties(
    probs: np.ndarray, kinds: np.ndarray, class_names: list[str]
) -> dict[str, float | str]:
    """Hard-vs-easy separation of the top-class probability, and the easy OoDs' votes.

    Parameters
    ----------
    probs : (N, C) class probabilities of N pool images (originals, so no picture counts twice)
    kinds : (N,) pool kinds ("hard_ood", "easy_ood", "contaminated")
    class_names : the C class names

    Returns
    -------
    dict with ``hardness_auroc`` (hard vs easy), the median top-class probability of each kind,
    ``easy_top_vote_share`` (the largest share of easy OoDs whose top class is one class) and
    ``easy_top_vote_class`` (that class).
    """
    probs, kinds = np.asarray(probs), np.asarray(kinds)
    top = probs.max(axis=1)
    hard, easy, contaminated = (kinds == k for k in ("hard_ood", "easy_ood", "contaminated"))
    votes = np.bincount(probs[easy].argmax(axis=1), minlength=len(class_names))
    share = votes / max(1, votes.sum())
    return {
        "hardness_auroc": auroc(top[hard], top[easy]),
        "hard_median_top_prob": float(np.median(top[hard])) if hard.any() else float("nan"),
        "easy_median_top_prob": float(np.median(top[easy])) if easy.any() else float("nan"),
        "contaminated_median_top_prob": (
            float(np.median(top[contaminated])) if contaminated.any() else float("nan")
        ),
        "easy_top_vote_share": float(share.max()),
        "easy_top_vote_class": class_names[int(share.argmax())],
    }


def meets(name: str, value: float) -> bool:
    """Whether ``value`` meets the target of property ``name`` (see ``TARGETS``)."""
    op, bound = TARGETS[name]
    if op == ">=":
        return value >= bound
    if op == "<":
        return value < bound
    if op == "<=":
        return value <= bound
    return bound[0] <= value <= bound[1]
