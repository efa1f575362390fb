"""Export: the verdicts in the store become a hard-OoD manifest (schema v1) and an ``ood_list.txt``.

    hardood export --db curation.db --out data_manifests/voc_hard_ood [--policy majority] [--force]

**Every live verdict counts, whatever the queue holds now.** A re-mine replaces the queue, and
reviewed images leave it, but each verdict keeps the queue facts and scores it was given on
(``curate.review.verdicts``), so an export after several rounds (mine, review, export, train,
re-mine, review more) holds every round. Each row carries the round it was reviewed in
(``queue_run_id``, ``queue_rank``) and the checkpoint that ranked it
(``scoring_checkpoint_sha256``); the meta lists the rounds (``mining.rounds``).

One manifest row per image with at least one live vote (or an adjudication); its votes decide
its verdict under the label policy (``curate.export.policies``), the lead's adjudication
overrides them, gold checks are not votes. With ``min_gold_accuracy`` the votes of annotators who
scored below it on enough gold items are dropped. The export reports, for every policy, the
counts per verdict, the ties and the items short of the overlap, and what the policy did with
them (``ExportReport``; ``hardood export`` prints it).

All reads happen in one read transaction, so annotators who keep working during an export cannot
make its rows and its meta disagree. ``image_root`` is the pool root registered in the store; when
the reviewed images come from several roots it is their deepest common folder, and each ``path``
is relative to that. The folder is written by ``curate.export.files``: atomically, with the usual
permissions, spreadsheet-safe.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from curate import store
from curate.export.files import (
    EXPORT_FILES,
    OOD_LIST_NAME,
    ood_list_lines,
    refuse_to_clobber,
    write_export,
)
from curate.export.policies import item_verdict, policy_report, require_policy
from curate.export.report import ExportReport, format_report
from curate.ingest.image_files import contained_file
from curate.review.gold import gold_accuracy
from curate.review.leases import resolve_overlap
from curate.review.verdicts import FACT_COLUMNS, LIVE_VERDICT_COLUMNS
from wood_train.errors import ConfigError, DataError, MissingInputError
from wood_train.manifest.contract import LABEL_POLICIES, TRAINED_VERDICT

__all__ = ["EXPORT_FILES", "OOD_LIST_NAME", "ExportReport", "ExportResult", "build_export",
           "export_manifest", "format_report"]  # fmt: skip
MAX_LISTED = 20  # paths named in the meta's ood_list notes
DEFAULT_MIN_GOLD_JUDGED = 5


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    images: int  # manifest rows
    no_foreground: int  # rows trained on
    verdicts: int  # live votes behind the rows
    report: ExportReport


def _read_reviews(conn: sqlite3.Connection) -> dict[str, Any]:
    """Every live verdict with its facts, the paths of the judged images and the store facts,
    in one snapshot."""
    with store.transaction(conn):  # one read snapshot while annotators keep writing
        live = pd.DataFrame(
            [tuple(r) for r in conn.execute(
                f"SELECT {', '.join(LIVE_VERDICT_COLUMNS)} FROM verdicts WHERE undone = 0 "
                "ORDER BY verdict_id"
            )],
            columns=list(LIVE_VERDICT_COLUMNS),
        )  # fmt: skip
        judged = "SELECT sha256 FROM verdicts WHERE undone = 0"
        locations: dict[str, list[tuple[str, str]]] = {}
        for row in conn.execute(
            "SELECT p.sha256, r.path, p.relpath FROM image_paths p JOIN roots r USING (root_id) "
            f"WHERE p.sha256 IN ({judged}) ORDER BY p.root_id, p.relpath"
        ):
            locations.setdefault(row[0], []).append(
                (store.path_text(row[1]), store.path_text(row[2]))
            )
        latest_scores = {
            row["sha256"]: dict(row)
            for row in conn.execute(
                "SELECT s.sha256, s.checkpoint_sha256, s.top_class, s.top_score, s.hardness_score "
                f"FROM scores s WHERE s.sha256 IN ({judged}) ORDER BY s.run_id"
            )
        }
        score_runs = {
            (row[0], row[1]): row[2]
            for row in conn.execute(
                f"SELECT sha256, checkpoint_sha256, run_id FROM scores WHERE sha256 IN ({judged})"
            )
        }
        runs = {
            row["run_id"]: {"run_id": row["run_id"], "command": row["command"],
                            "config": json.loads(row["config_json"]),
                            "checkpoint_sha256": row["checkpoint_sha256"]}
            for row in conn.execute(
                "SELECT run_id, command, config_json, checkpoint_sha256 FROM runs"
            )
        }  # fmt: skip
        gold = gold_accuracy(conn)
    return {
        "live": live, "locations": locations, "latest_scores": latest_scores,
        "score_runs": score_runs, "runs": runs, "gold": gold,
        "classes": store.get_classes(conn),
    }  # fmt: skip


def _image_location(sha256: str, locations: list[tuple[str, str]]) -> tuple[str, str]:
    """The first registered (root, relpath) that is a file inside its root, with a UTF-8 name.

    The manifest is UTF-8 text, so a path whose name is not valid UTF-8 cannot be written there.
    """
    usable = [(root, rel) for root, rel in locations if contained_file(root, rel) is not None]
    for root, relpath in usable:
        if store.path_value(root) == root and store.path_value(relpath) == relpath:
            return root, relpath
    if usable:
        raise DataError(
            f"image {sha256[:12]}: its file name {store.shown_path(usable[0][1])!r} (under "
            f"{store.shown_path(usable[0][0])}) is not valid UTF-8, which a manifest cannot hold; "
            "rename the file and re-run `hardood mine`, then export again"
        )
    where = (
        f" (first: {store.shown_path(locations[0][1])!r} under {store.shown_path(locations[0][0])})"
        if locations
        else ""
    )
    raise MissingInputError(
        f"image {sha256[:12]}: no registered path is a file inside its root{where}; "
        "was the pool moved?"
    )


def _dropped_annotators(
    gold: pd.DataFrame, min_accuracy: float | None, min_judged: int
) -> list[str]:
    if min_accuracy is None:
        return []
    if not 0.0 <= min_accuracy <= 1.0:
        raise ConfigError(f"min_gold_accuracy must be in [0, 1], got {min_accuracy!r}")
    measured = gold[gold["gold_judged"] >= min_judged]
    return sorted(measured.loc[measured["gold_accuracy"] < min_accuracy, "annotator"])


def build_export(
    conn: sqlite3.Connection,
    policy: str = "majority",
    k: int | None = None,
    min_gold_accuracy: float | None = None,
    min_gold_judged: int = DEFAULT_MIN_GOLD_JUDGED,
) -> tuple[pd.DataFrame, dict, ExportReport]:
    """The manifest rows, its meta and the export report for the store's verdicts, unwritten.

    Parameters
    ----------
    policy
        The label policy the rows use (every policy is reported).
    k
        The overlap the report measures "short of overlap" against; None: the team's overlap.
    min_gold_accuracy, min_gold_judged
        Leave out the votes of annotators who judged at least ``min_gold_judged`` gold items and
        got fewer than ``min_gold_accuracy`` of them right.
    """
    require_policy(policy)
    db_path = store.db_path(conn)
    overlap = resolve_overlap(conn, k)
    facts = _read_reviews(conn)
    live: pd.DataFrame = facts["live"]
    if live.empty:
        raise DataError(f"{db_path}: no verdicts yet, nothing to export (run `hardood annotate`)")
    classes = facts["classes"]
    if not classes:
        raise DataError(f"{db_path}: the store records no class names (run `hardood mine` first)")
    dropped = _dropped_annotators(facts["gold"], min_gold_accuracy, min_gold_judged)
    is_vote = (live["gold_check"] == 0) & (live["source"] != "lead")
    votes = live[is_vote & ~live["annotator"].isin(dropped)]
    decided = live[live["source"] == "lead"].drop_duplicates("sha256", keep="last")
    adjudicated = dict(zip(decided["sha256"], decided["verdict"]))
    shas = list(dict.fromkeys([*votes["sha256"], *decided["sha256"]]))
    if not shas:
        raise DataError(
            f"{db_path}: {len(live)} live verdict(s), but none is a vote to export: "
            f"{int((live['gold_check'] == 1).sum())} gold check(s), "
            f"{int((is_vote & live['annotator'].isin(dropped)).sum())} vote(s) of dropped "
            f"annotator(s) {dropped}"
        )
    item_facts = _item_facts(shas, live, facts["latest_scores"])
    unscored = [sha for sha in shas if item_facts[sha].get("top_score") is None]
    if unscored:
        raise DataError(
            f"{db_path}: {len(unscored)} reviewed image(s) have no scores in the store (first: "
            f"{unscored[0][:12]}); re-run `hardood mine` with the checkpoint that ranked them"
        )
    located = {sha: _image_location(sha, facts["locations"].get(sha, [])) for sha in shas}
    roots = sorted({root for root, _ in located.values()})
    image_root = roots[0] if len(roots) == 1 else os.path.commonpath(roots)

    by_item = dict(tuple(votes.groupby("sha256")))
    empty = votes.iloc[:0]
    rows, tallies = [], []
    for sha in shas:
        mine = by_item.get(sha, empty)
        counts = Counter(mine["verdict"])
        fact = item_facts[sha]
        root, relpath = located[sha]
        path = PurePosixPath(Path(root).relative_to(image_root).as_posix()) / relpath
        tallies.append((counts, adjudicated.get(sha)))
        rows.append({
            "path": str(path).removeprefix("./"),
            "sha256": sha,
            "verdict": item_verdict(counts, policy, adjudicated.get(sha)),
            "top_class": store.class_name(classes, int(fact["top_class"])),
            "top_score": float(fact["top_score"]),
            "votes_no_foreground": counts["no_foreground"],
            "votes_contains_foreground": counts["contains_foreground"],
            "annotators": sorted(set(mine["annotator"])),
            "votes_unsure": counts["unsure"],
            "votes_bad_image": counts["bad_image"],
            "adjudicated_verdict": adjudicated.get(sha, ""),
            "hardness_score": float(fact["hardness_score"]),
            "queue_rank": fact.get("queue_rank"),
            "queue_run_id": fact.get("queue_run_id"),
            "scoring_checkpoint_sha256": fact.get("checkpoint_sha256") or "",
        })  # fmt: skip
    frame = pd.DataFrame(rows)
    lines, renamed, left_out = ood_list_lines(frame)
    report = ExportReport(
        policy=policy,
        overlap=overlap,
        images=len(frame),
        votes=len(votes),
        annotators=int(votes["annotator"].nunique()),
        gold_checks=int((live["gold_check"] == 1).sum()),
        policies=tuple(policy_report(tallies, p, overlap, p == policy) for p in LABEL_POLICIES),
        dropped_annotators=tuple(dropped),
        ood_list_renamed=tuple(renamed),
        ood_list_left_out=tuple(left_out),
    )
    meta = _meta(frame, votes, facts, image_root, classes, report, lines)
    return frame, meta, report


def _item_facts(
    shas: list[str], live: pd.DataFrame, latest_scores: dict[str, dict]
) -> dict[str, dict]:
    """Per item, the facts its first vote was given on (the queue round that sent it to
    review); an item with none (a verdict older than these facts) takes its latest scores."""
    with_facts = live[live["top_score"].notna()].sort_values(
        ["gold_check", "verdict_id"], kind="mergesort"
    )
    first = with_facts.drop_duplicates("sha256").set_index("sha256")
    out = {}
    for sha in shas:
        if sha in first.index:
            row = first.loc[sha]
            out[sha] = {c: _plain(row[c]) for c in FACT_COLUMNS}
        else:
            score = latest_scores.get(sha, {})
            out[sha] = {c: score.get(c) for c in ("checkpoint_sha256", "top_class", "top_score",
                                                  "hardness_score")}  # fmt: skip
    return out


def _plain(value: Any) -> Any:
    """A pandas cell as a plain Python value (None for missing)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def _meta(
    frame: pd.DataFrame,
    votes: pd.DataFrame,
    facts: dict[str, Any],
    image_root: str,
    classes: list[str],
    report: ExportReport,
    ood_lines: list[str],
) -> dict[str, Any]:
    runs, score_runs = facts["runs"], facts["score_runs"]
    rounds = []
    for (run_id, checkpoint), group in frame.groupby(
        [frame["queue_run_id"].fillna(-1), "scoring_checkpoint_sha256"], sort=True
    ):
        scoring = Counter(score_runs.get((sha, checkpoint)) for sha in group["sha256"])
        scoring_run = max(scoring, key=lambda r: (scoring[r], r or 0)) if scoring else None
        rounds.append({
            "queue_run": runs.get(int(run_id)) if run_id != -1 else None,
            "scoring_checkpoint_sha256": checkpoint or None,
            "scoring_run": runs.get(scoring_run),
            "images": len(group),
            "no_foreground": int((group["verdict"] == TRAINED_VERDICT).sum()),
        })  # fmt: skip
    latest = rounds[-1]
    seconds = votes["seconds"].dropna().tolist()
    chosen = report.chosen
    return {
        "image_root": image_root,
        "classes": list(classes),
        # the latest round's checkpoint; each row names its own (scoring_checkpoint_sha256)
        "scoring_checkpoint_sha256": latest["scoring_checkpoint_sha256"],
        "mining": {
            "queue_run": latest["queue_run"],
            "scoring_run": latest["scoring_run"],
            "rounds": rounds,
        },
        "label_policy": report.policy,
        "overlap": report.overlap,
        "policy_report": {
            "counts": chosen.counts,
            "ties": chosen.ties,
            "ties_became": chosen.ties_became,
            "short_of_overlap": chosen.short_of_overlap,
            "short_became": chosen.short_became,
            "blocked_by_unsure": chosen.blocked_by_unsure,
            "adjudicated": chosen.adjudicated,
        },  # fmt: skip
        "dropped_annotators": list(report.dropped_annotators),
        "ood_list": {
            "lines": len(ood_lines),
            "written_as_dot_slash": list(report.ood_list_renamed[:MAX_LISTED]),
            "left_out": list(report.ood_list_left_out[:MAX_LISTED]),
        },
        "labelling_cost": {
            "images_reviewed": len(frame),
            "verdicts": len(votes),
            "annotators": int(votes["annotator"].nunique()),
            "seconds_total": float(sum(seconds)),
            "seconds_median": float(statistics.median(seconds)) if seconds else None,
            "verdicts_by_source": dict(sorted(Counter(votes["source"]).items())),
            "gold_checks": report.gold_checks,
            "adjudications": chosen.adjudicated,
        },
    }


def export_manifest(
    conn: sqlite3.Connection,
    out_dir: str | Path,
    policy: str = "majority",
    force: bool = False,
    k: int | None = None,
    min_gold_accuracy: float | None = None,
    min_gold_judged: int = DEFAULT_MIN_GOLD_JUDGED,
) -> ExportResult:
    """Export the store's verdicts to ``out_dir``; records an ``export`` run in the store.

    Example
    -------
    >>> with store.connect("curation.db") as conn:  # doctest: +SKIP
    ...     result = export_manifest(conn, "data_manifests/voc_hard_ood")
    >>> result.no_foreground, result.report.warnings  # doctest: +SKIP
    (2874, ['12 image(s) end in a tie; majority exported them as 12 unsure'])
    """
    out_dir = Path(out_dir)
    refuse_to_clobber(out_dir, force)  # fail before any work
    require_policy(policy)
    config = {"out": str(out_dir), "policy": policy, "force": force, "overlap": k,
              "min_gold_accuracy": min_gold_accuracy, "min_gold_judged": min_gold_judged}  # fmt: skip
    run_id = store.start_run(conn, "export", config)
    try:
        rows, meta, report = build_export(conn, policy, k, min_gold_accuracy, min_gold_judged)
        lines, _, _ = ood_list_lines(rows)
        write_export(out_dir, rows, meta, lines, force=force)
    except BaseException:
        store.finish_run(conn, run_id, "failed")
        raise
    result = ExportResult(
        out_dir=out_dir,
        images=len(rows),
        no_foreground=int((rows["verdict"] == TRAINED_VERDICT).sum()),
        verdicts=report.votes,
        report=report,
    )
    store.finish_run(conn, run_id, "done", {"images": result.images,
                                               "no_foreground": result.no_foreground,
                                               "verdicts": result.verdicts})  # fmt: skip
    return result
