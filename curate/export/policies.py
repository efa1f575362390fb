"""Label policies: how the votes several annotators gave one image become its exported verdict.

The policies themselves (``majority``, ``unanimous``, ``any``) are part of the manifest contract,
``wood_train.manifest.contract.verdict_from_votes``, because the validator re-derives every row's
verdict from its votes. Export adds one rule on top: an image is ``bad_image`` when more people
said so than gave any other verdict. ``unsure`` votes abstain. A new policy goes into
``LABEL_POLICIES`` and ``verdict_from_votes``; ``item_verdict`` then offers it here.
"""

from __future__ import annotations

from collections import Counter

from wood_train.errors import ConfigError
from wood_train.manifest.contract import LABEL_POLICIES, verdict_from_votes


def require_policy(policy: str) -> str:
    """``policy`` if it is a known label policy; a ConfigError naming the choices otherwise."""
    if policy not in LABEL_POLICIES:
        raise ConfigError(f"unknown label policy {policy!r}; choose one of {LABEL_POLICIES}")
    return policy


def item_verdict(votes: Counter, policy: str) -> str:
    """The exported verdict of one item from its vote counts per verdict kind.

    Examples
    --------
    >>> item_verdict(Counter(no_foreground=2, contains_foreground=1), "majority")
    'no_foreground'
    >>> item_verdict(Counter(no_foreground=2, contains_foreground=1), "unanimous")
    'unsure'
    """
    no, yes = votes["no_foreground"], votes["contains_foreground"]
    if votes["bad_image"] > max(no, yes, votes["unsure"]):
        return "bad_image"
    return verdict_from_votes(no, yes, policy)
