"""What an export did, for the command line and the app: every policy's counts, the ties, the
items short of the overlap, the annotators left out, and what ``ood_list.txt`` could not carry."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from curate.export.files import OOD_LIST_NAME
from curate.export.policies import PolicyReport


@dataclass(frozen=True)
class ExportReport:
    """What an export did, for the command line and the app.

    ``policies`` has one ``PolicyReport`` per label policy (the chosen one marked ``chosen``);
    ``dropped_annotators`` are those whose votes ``min_gold_accuracy`` left out;
    ``ood_list_renamed`` / ``ood_list_left_out`` are the paths written as ``./PATH`` or left out
    of ``ood_list.txt``.
    """

    policy: str
    overlap: int
    images: int
    votes: int
    annotators: int
    gold_checks: int
    policies: tuple[PolicyReport, ...]
    dropped_annotators: tuple[str, ...] = ()
    ood_list_renamed: tuple[str, ...] = ()
    ood_list_left_out: tuple[str, ...] = ()

    @property
    def chosen(self) -> PolicyReport:
        return next(p for p in self.policies if p.chosen)

    @property
    def warnings(self) -> list[str]:
        """Sentences about the chosen policy and the files that a reader should not miss."""
        out = list(self.chosen.notes)
        if self.dropped_annotators:
            out.append(
                f"votes of {', '.join(self.dropped_annotators)} were left out "
                "(gold accuracy below the threshold)"
            )
        if self.ood_list_renamed:
            out.append(
                f"{len(self.ood_list_renamed)} path(s) start with a spreadsheet formula "
                f"character and are written as ./PATH in {OOD_LIST_NAME} (same file), e.g. "
                f"{self.ood_list_renamed[0]!r}"
            )
        if self.ood_list_left_out:
            out.append(
                f"{len(self.ood_list_left_out)} path(s) hold a line break or end in white space "
                f"and are left out of {OOD_LIST_NAME} (manifest.csv keeps them; rename the files "
                f"and re-mine to include them), e.g. {self.ood_list_left_out[0]!r}"
            )
        return out


def format_report(result) -> str:
    """What ``hardood export`` prints for an ``ExportResult``: the export, a table of every
    policy, then the warnings."""
    report = result.report
    lines = [
        f"exported {result.images} reviewed images -> {result.out_dir} (policy {report.policy}, "
        f"overlap {report.overlap}; {report.votes} votes from {report.annotators} annotator(s)"
        + (f", {report.chosen.adjudicated} adjudicated" if report.chosen.adjudicated else "")
        + ")"
    ]
    lines += policy_table(report).to_string(index=False).splitlines()
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def policy_table(report: ExportReport) -> pd.DataFrame:
    """One row per label policy (the chosen one marked ``*``): rows per verdict, the ties, the
    items short of the overlap and what the policy made of each, the items ``unsure`` blocked."""
    return pd.DataFrame(
        [
            {
                "policy": p.policy + (" *" if p.chosen else ""),
                **p.counts,
                "ties": _became(p.ties, p.ties_became),
                f"short (< {report.overlap} votes)": _became(p.short_of_overlap, p.short_became),
                "unsure blocked": p.blocked_by_unsure,
            }
            for p in report.policies
        ]
    )


def _became(n: int, became: dict[str, int]) -> str:
    if not n:
        return "0"
    return f"{n} -> " + ", ".join(f"{c} {v}" for v, c in sorted(became.items()))
