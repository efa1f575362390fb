"""Label policies: how the votes several annotators gave one image become its exported verdict,
and what each policy did (``PolicyReport``).

The policies themselves (``majority``, ``unanimous``, ``any``), how ``unsure`` votes count under
each (they abstain under ``majority`` and block under ``unanimous`` and ``any``) and the lead's
adjudication (it decides) are part of the manifest contract,
``wood_train.manifest.contract.verdict_from_votes``, because the validator re-derives every row's
verdict from its votes. Export adds one rule on top: an image is ``bad_image`` when more people
said so than gave any other verdict. A new policy goes into ``LABEL_POLICIES`` and
``verdict_from_votes``; ``item_verdict`` then offers it here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from wood_train.errors import ConfigError
from wood_train.manifest.contract import LABEL_POLICIES, VERDICTS, verdict_from_votes


def require_policy(policy: str) -> str:
    """``policy`` if it is a known label policy; a ConfigError naming the choices otherwise."""
    if policy not in LABEL_POLICIES:
        raise ConfigError(f"unknown label policy {policy!r}; choose one of {LABEL_POLICIES}")
    return policy


def item_verdict(votes: Counter, policy: str, adjudicated: str | None = None) -> str:
    """The exported verdict of one item from its vote counts per verdict kind.

    Examples
    --------
    >>> item_verdict(Counter(no_foreground=2, contains_foreground=1), "majority")
    'no_foreground'
    >>> item_verdict(Counter(no_foreground=2, contains_foreground=1), "unanimous")
    'unsure'
    >>> item_verdict(Counter(no_foreground=1, unsure=1), "unanimous")
    'unsure'
    >>> item_verdict(Counter(no_foreground=1, contains_foreground=1), "majority", "no_foreground")
    'no_foreground'
    """
    if adjudicated:
        return adjudicated
    no, yes, unsure = votes["no_foreground"], votes["contains_foreground"], votes["unsure"]
    if votes["bad_image"] > max(no, yes, unsure):
        return "bad_image"
    return verdict_from_votes(no, yes, policy, votes_unsure=unsure)


@dataclass(frozen=True)
class PolicyReport:
    """What one label policy makes of the reviewed items.

    ``counts``: exported items per verdict. ``ties``: items with as many no-foreground as
    contains-foreground votes (at least one each), ``ties_became`` what the policy made of them.
    ``short_of_overlap``: items with fewer votes than the overlap, ``short_became`` likewise.
    ``blocked_by_unsure``: items that are ``unsure`` only because of an ``unsure`` vote.
    ``adjudicated``: items the lead decided (their verdict is the lead's under every policy).
    """

    policy: str
    counts: dict[str, int]
    ties: int
    ties_became: dict[str, int]
    short_of_overlap: int
    short_became: dict[str, int]
    blocked_by_unsure: int
    adjudicated: int
    chosen: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def trained(self) -> int:
        """Items this policy would train on (``no_foreground``)."""
        return self.counts.get("no_foreground", 0)


def policy_report(
    items: list[tuple[Counter, str | None]], policy: str, overlap: int, chosen: bool = False
) -> PolicyReport:
    """What ``policy`` makes of ``items`` (each: its vote counts, its adjudication or None)."""
    counts: Counter = Counter()
    ties_became: Counter = Counter()
    short_became: Counter = Counter()
    blocked = adjudicated = 0
    for votes, decided in items:
        verdict = item_verdict(votes, policy, decided)
        counts[verdict] += 1
        no, yes = votes["no_foreground"], votes["contains_foreground"]
        if no == yes > 0:
            ties_became[verdict] += 1
        if sum(votes[v] for v in VERDICTS) < overlap:
            short_became[verdict] += 1
        if decided:
            adjudicated += 1
        elif verdict == "unsure" and votes["unsure"]:
            abstaining = Counter({v: votes[v] for v in VERDICTS if v != "unsure"})
            blocked += item_verdict(abstaining, policy) != "unsure"
    notes = []
    n_ties, n_short = sum(ties_became.values()), sum(short_became.values())
    if n_ties:
        notes.append(
            f"{n_ties} image(s) end in a tie; {policy} exported them as {_spell(ties_became)}"
        )
    if n_short:
        notes.append(
            f"{n_short} image(s) have fewer than {overlap} vote(s); {policy} exported them from "
            f"the votes they have: {_spell(short_became)}"
        )
    if blocked:
        notes.append(f"{blocked} image(s) are unsure only because someone voted unsure")
    return PolicyReport(
        policy=policy,
        counts={v: int(counts[v]) for v in VERDICTS},
        ties=n_ties,
        ties_became=dict(ties_became),
        short_of_overlap=n_short,
        short_became=dict(short_became),
        blocked_by_unsure=int(blocked),
        adjudicated=adjudicated,
        chosen=chosen,
        notes=notes,
    )


def _spell(counts: Counter) -> str:
    return ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
