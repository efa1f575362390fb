"""Export: the reviews in the store become a hard-OoD manifest (schema v1) and an ``ood_list.txt``.

    hardood export --db curation.db --out data_manifests/voc_hard_ood [--policy majority] [--force]

One manifest row per queue item with at least one live verdict; its votes decide its verdict
under the label policy (``curate.export.policies``). All reads happen in one read transaction, so
annotators who keep working during an export cannot make its rows and its meta disagree.
Beside ``manifest.csv`` and ``manifest.meta.json`` the folder holds ``ood_list.txt``: the
``no_foreground`` paths, one per line, relative to ``image_root``, as the reference implementation
reads them (``--ood_root`` = ``image_root``).

``image_root`` is the pool root registered in the store. When the reviewed images come from
several registered roots it is their deepest common folder, and each ``path`` is relative to that,
so every path still resolves. The folder is written into a temporary sibling and renamed into
place; an existing export is replaced only with ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from curate import store
from curate.export.policies import item_verdict, require_policy
from curate.ingest.image_files import contained_file
from curate.review.leases import SCORE_OF_QUEUE_ITEM
from wood_train.errors import ConfigError, DataError, MissingInputError, OutputExistsError
from wood_train.manifest.contract import CSV_NAME, META_NAME, TRAINED_VERDICT
from wood_train.manifest.write import write_manifest

OOD_LIST_NAME = "ood_list.txt"
EXPORT_FILES = (CSV_NAME, META_NAME, OOD_LIST_NAME)


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    images: int  # manifest rows
    no_foreground: int  # rows in ood_list.txt
    verdicts: int  # live verdicts behind the rows


def _read_reviews(conn: sqlite3.Connection) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Live verdicts, the reviewed items (queue + scores + paths) and store facts, one snapshot."""
    with store.transaction(conn):  # one read snapshot while annotators keep writing
        verdicts = pd.DataFrame(
            [tuple(r) for r in conn.execute(
                "SELECT sha256, annotator, verdict, seconds, source FROM verdicts "
                "WHERE undone = 0 ORDER BY verdict_id"
            )],
            columns=["sha256", "annotator", "verdict", "seconds", "source"],
        )  # fmt: skip
        items = pd.DataFrame(
            [tuple(r) for r in conn.execute(
                "SELECT q.sha256, q.rank, q.top_class, q.hardness_score, s.top_score, "
                "r.checkpoint_sha256, q.run_id, s.run_id FROM queue q "
                f"{SCORE_OF_QUEUE_ITEM} "
                "WHERE q.sha256 IN (SELECT sha256 FROM verdicts WHERE undone = 0) ORDER BY q.rank"
            )],
            columns=["sha256", "rank", "top_class", "hardness_score", "top_score",
                     "checkpoint_sha256", "queue_run_id", "score_run_id"],
        )  # fmt: skip
        locations: dict[str, list[tuple[str, str]]] = {}
        for row in conn.execute(
            "SELECT p.sha256, r.path, p.relpath FROM image_paths p JOIN roots r USING (root_id) "
            "WHERE p.sha256 IN (SELECT sha256 FROM verdicts WHERE undone = 0) "
            "ORDER BY p.root_id, p.relpath"
        ):
            locations.setdefault(row[0], []).append(
                (store.path_text(row[1]), store.path_text(row[2]))
            )
        runs = {
            row["run_id"]: {"run_id": row["run_id"], "command": row["command"],
                            "config": json.loads(row["config_json"])}
            for row in conn.execute("SELECT run_id, command, config_json FROM runs")
        }  # fmt: skip
        facts = {"classes": store.get_classes(conn), "locations": locations, "runs": runs}
    return verdicts, items, facts


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


def build_export(conn: sqlite3.Connection, policy: str = "majority") -> tuple[pd.DataFrame, dict]:
    """The manifest rows (in queue order) and meta for the reviews in the store, unwritten."""
    require_policy(policy)
    db_path = store.db_path(conn)
    verdicts, items, facts = _read_reviews(conn)
    if items.empty:
        raise DataError(f"{db_path}: no verdicts yet, nothing to export (run `hardood annotate`)")
    classes = facts["classes"]
    if not classes:
        raise DataError(f"{db_path}: the store records no class names (run `hardood mine` first)")
    missing_scores = items.loc[items["top_score"].isna(), "sha256"].tolist()
    if missing_scores:
        raise DataError(
            f"{db_path}: {len(missing_scores)} reviewed image(s) have no scores from the queue's "
            f"checkpoint (first: {missing_scores[0][:12]}); re-run `hardood queue`"
        )
    checkpoints = sorted({c for c in items["checkpoint_sha256"] if c})
    if len(checkpoints) > 1:
        raise DataError(f"{db_path}: reviewed images were ranked by {len(checkpoints)} checkpoints")

    located = {
        sha: _image_location(sha, facts["locations"].get(sha, [])) for sha in items["sha256"]
    }
    roots = sorted({root for root, _ in located.values()})
    image_root = roots[0] if len(roots) == 1 else os.path.commonpath(roots)
    by_item = dict(tuple(verdicts.groupby("sha256")))
    rows = []
    for item in items.itertuples(index=False):
        mine = by_item[item.sha256]
        votes = Counter(mine["verdict"])
        root, relpath = located[item.sha256]
        path = PurePosixPath(Path(root).relative_to(image_root).as_posix()) / relpath
        rows.append({
            "path": str(path).removeprefix("./"),
            "sha256": item.sha256,
            "verdict": item_verdict(votes, policy),
            "top_class": store.class_name(classes, int(item.top_class)),
            "top_score": float(item.top_score),
            "votes_no_foreground": votes["no_foreground"],
            "votes_contains_foreground": votes["contains_foreground"],
            "annotators": sorted(set(mine["annotator"])),
            "votes_unsure": votes["unsure"],
            "votes_bad_image": votes["bad_image"],
            "hardness_score": float(item.hardness_score),
            "queue_rank": int(item.rank),
        })  # fmt: skip
    seconds = verdicts["seconds"].dropna().tolist()
    meta = {
        "image_root": image_root,
        "classes": list(classes),
        "scoring_checkpoint_sha256": checkpoints[0] if checkpoints else None,
        "mining": {
            "queue_run": facts["runs"].get(int(items["queue_run_id"].iloc[0])),
            "scoring_run": facts["runs"].get(int(items["score_run_id"].iloc[0])),
        },
        "label_policy": policy,
        "labelling_cost": {
            "images_reviewed": len(rows),
            "verdicts": len(verdicts),
            "annotators": int(verdicts["annotator"].nunique()),
            "seconds_total": float(sum(seconds)),
            "seconds_median": float(statistics.median(seconds)) if seconds else None,
            "verdicts_by_source": dict(sorted(Counter(verdicts["source"]).items())),
        },
    }
    return pd.DataFrame(rows), meta


def _refuse_to_clobber(out_dir: Path, force: bool) -> None:
    for folder in out_dir.parents:  # the nearest existing ancestor must be a folder
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(
                    f"--out {out_dir}: {folder} is a file, not a folder, so the export cannot be "
                    "written under it; choose an --out outside it"
                )
            break
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir} exists and is not a folder; choose another --out")
    contents = {p.name for p in out_dir.iterdir()}
    foreign = sorted(contents - set(EXPORT_FILES))
    if foreign:
        raise OutputExistsError(
            f"{out_dir} holds files that are not an export ({foreign[:5]}); choose a new folder"
        )
    if contents and not force:
        raise OutputExistsError(f"{out_dir} already holds an export; pass --force to replace it")


def _write_text_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_export(out_dir: str | Path, rows: pd.DataFrame, meta: dict, force: bool = False) -> Path:
    """Write the manifest and ``ood_list.txt`` into a temporary sibling, then rename into place."""
    out_dir = Path(out_dir)
    _refuse_to_clobber(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        built = write_manifest(staging / out_dir.name, rows, meta)
        ood = rows.loc[rows["verdict"] == TRAINED_VERDICT].sort_values("queue_rank")["path"]
        _write_text_synced(built / OOD_LIST_NAME, "".join(f"{p}\n" for p in ood))
        if out_dir.exists():  # swap; put the old export back if the second rename fails
            old = staging / "previous"
            out_dir.rename(old)
            try:
                built.rename(out_dir)
            except OSError:
                old.rename(out_dir)
                raise
        else:
            built.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def export_manifest(
    conn: sqlite3.Connection, out_dir: str | Path, policy: str = "majority", force: bool = False
) -> ExportResult:
    """Export the store's reviews to ``out_dir``; records an ``export`` run in the store.

    Example
    -------
    >>> with store.connect("curation.db") as conn:  # doctest: +SKIP
    ...     result = export_manifest(conn, "data_manifests/voc_hard_ood")
    >>> result.no_foreground  # doctest: +SKIP
    2874
    """
    out_dir = Path(out_dir)
    _refuse_to_clobber(out_dir, force)  # fail before any work
    require_policy(policy)
    config = {"out": str(out_dir), "policy": policy, "force": force}
    run_id = store.start_run(conn, "export", config)
    try:
        rows, meta = build_export(conn, policy)
        write_export(out_dir, rows, meta, force=force)
    except BaseException:
        store.finish_run(conn, run_id, "failed")
        raise
    result = ExportResult(
        out_dir=out_dir,
        images=len(rows),
        no_foreground=int((rows["verdict"] == TRAINED_VERDICT).sum()),
        verdicts=int(meta["labelling_cost"]["verdicts"]),
    )
    store.finish_run(conn, run_id, "done", {"images": result.images,
                                               "no_foreground": result.no_foreground,
                                               "verdicts": result.verdicts})  # fmt: skip
    return result
