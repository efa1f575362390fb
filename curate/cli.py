"""The curation room's commands: ``mine``, ``queue``, ``similar``, ``export``.

Parsers are built from configs and constants only (no torch, faiss or pandas), so
``hardood <cmd> --help`` is instant; each ``run_*`` imports its stage when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from curate.mine_config import DEFAULT_EMBEDDER, MineConfig
from curate.mine_config import PRESETS as MINE_PRESETS
from wood_train import config as cfg
from wood_train.manifest.contract import LABEL_POLICIES


def add_mine(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Ingest a pool (folder, list or CSV), score it with the baseline classifier, group near "
        "duplicates and build the review queue. Re-run to resume or to add images."
    )
    cfg.add_stage_args(parser, MineConfig, MINE_PRESETS, "default")
    parser.set_defaults(func=run_mine)


def run_mine(args: argparse.Namespace) -> int:
    from curate.mine import mine

    result = mine(cfg.config_from_args(args, MineConfig, MINE_PRESETS))
    print(f"mine: run {result.run_id} done; `hardood queue --db {result.db}` shows the queue")
    return 0


def add_queue(parser: argparse.ArgumentParser) -> None:
    parser.description = "Print the review queue that `hardood mine` built, hardest first."
    parser.add_argument("--db", type=Path, default=Path("curation.db"), help="the curation store")
    parser.add_argument("--top", type=int, default=None, help="only the first N rows (print: 20)")
    parser.add_argument("--csv", type=Path, default=None, help="write the rows to this CSV file")
    parser.set_defaults(func=run_queue)


def run_queue(args: argparse.Namespace) -> int:
    from curate import store
    from curate.queue.build import format_queue_table, queue_frame

    db = store.open_existing(args.db)
    with store.connect(db) as conn:
        frame = queue_frame(conn, top=args.top)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.csv.with_name(args.csv.name + ".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(args.csv)
        print(f"wrote {len(frame)} queue rows to {args.csv}")
        return 0
    if frame.empty:
        print(f"the queue in {db} is empty; run `hardood mine` to build it")
        return 0
    print(format_queue_table(frame.head(args.top or 20)))
    print(f"paste a sha256 or a path into `hardood similar --db {args.db} --like ...`")
    return 0


def add_similar(parser: argparse.ArgumentParser) -> None:
    parser.description = "List the mined images whose embeddings are nearest to an image's."
    parser.add_argument("--db", required=True, type=Path, help="the curation store")
    parser.add_argument(
        "--like",
        required=True,
        help="an image, as `hardood queue` prints it: a sha256 prefix, a path, or a stored file "
        "name such as p_db0b5d43.jpg",
    )
    parser.add_argument("--k", type=int, default=50, help="how many neighbours (default: 50)")
    parser.add_argument(
        "--embedder",
        default=DEFAULT_EMBEDDER,
        help="stored embedder name or prefix (default: the classifier's)",
    )
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    parser.set_defaults(func=run_similar)


def run_similar(args: argparse.Namespace) -> int:
    from curate import store
    from curate.neighbours.similar import find_similar

    with store.connect(store.open_existing(args.db)) as conn:
        table = find_similar(conn, args.like, k=args.k, embedder=args.embedder)
    shown = table.assign(sha256=table["sha256"].str[:12], verdict=table["verdict"].fillna("-"))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"wrote {len(table)} rows to {args.csv}")
    return 0


def add_export(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write the reviewed images as a hard-OoD manifest (manifest.csv, manifest.meta.json and "
        "the reference code's ood_list.txt), atomically."
    )
    parser.add_argument("--db", type=Path, required=True, help="curation store (SQLite)")
    parser.add_argument("--out", type=Path, required=True, help="manifest folder to write")
    parser.add_argument(
        "--policy",
        choices=LABEL_POLICIES,
        default="majority",
        help="how several votes become one verdict (default: majority)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing export")
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="votes wanted per image, for the short-of-overlap report (default: the overlap "
        "`hardood annotate` recorded in the store, else 1)",
    )
    parser.add_argument(
        "--min-gold-accuracy",
        type=float,
        default=None,
        help="leave out the votes of annotators whose accuracy on gold items is below this "
        "(0-1; default: keep every vote)",
    )
    parser.add_argument(
        "--min-gold-judged",
        type=int,
        default=5,
        help="gold items an annotator must have judged before --min-gold-accuracy applies "
        "(default: 5)",
    )
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from curate import store
    from curate.export.build import export_manifest, format_report

    with store.connect(store.open_existing(args.db)) as conn:
        result = export_manifest(
            conn,
            args.out,
            policy=args.policy,
            force=args.force,
            k=args.overlap,
            min_gold_accuracy=args.min_gold_accuracy,
            min_gold_judged=args.min_gold_judged,
        )
    print(format_report(result))
    return 0
