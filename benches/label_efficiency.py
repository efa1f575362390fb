"""Label efficiency: CAM quality on held-out ``val`` against the number of verdicts spent.

One baseline (``hardood train --preset world``, fixed epochs, the last kept) scores the pool once.
Each strategy spends exactly B verdicts, B in ``--budgets``:

- ``queue``: hardood's review queue (``hardood mine``: near-duplicates collapsed, hardness tiers,
  per-class quotas, diversity), in queue order. The queue is built with ``min_hardness 0`` and
  ``queue_size`` = the largest budget, so it can spend every budget.
- ``random``: a uniform random sample of the pool's files.
- ``classifier``: the pool's files by the baseline's top-class probability alone (no
  near-duplicate grouping, quotas or diversity; CLIP needs weights this bench cannot download).

Simulated annotators judge every image: the pool truth, flipped with the demo's error rate (3%).
An image that holds an object, or is judged ``contains``, costs a verdict and gives nothing. The
images judged ``no_foreground`` train W-OoD from the baseline with the demo's settings (2 epochs,
lr 0.002, K = min(20, images); every cell the same number of steps); CAMs on ``val`` at the demo's
scales with flips give mIoU and the spurious-activation rate. Nothing is selected on ``val``: the
last epoch is kept. Seeds vary the W-OoD training, the annotators' mistakes and the random sample.
``--jobs`` trains several cells at once, one core each.

Every (strategy, budget, seed) cell is cached under ``--workspace`` by a key of its OoD list and
settings, so adding a budget or a seed re-runs only the new cells. Prints a table and writes
``label_efficiency.png`` (mIoU against verdicts, mean line, min-max over seeds shaded).

    python benches/label_efficiency.py                       # 3 strategies x 4 budgets x 3 seeds
    python benches/label_efficiency.py --strategies queue random --seeds 1 --budgets 100 400
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.demo.charts import Line, line_chart  # noqa: E402
from app.demo.config import DemoConfig  # noqa: E402
from app.demo.simulated_annotators import SimulatedTeam  # noqa: E402
from benches.cells import run_cells  # noqa: E402
from benches.world_bench import evaluate_on_val, world_and_baseline  # noqa: E402
from curate import store  # noqa: E402
from curate.mine import mine  # noqa: E402
from curate.mine_config import PRESETS as MINE_PRESETS  # noqa: E402
from curate.queue.build import queue_frame  # noqa: E402
from wood_train import config as cfg  # noqa: E402
from wood_train.model.checkpoint import read_checkpoint  # noqa: E402
from wood_train.train import train  # noqa: E402
from wood_train.world.truth import read_pool_truth  # noqa: E402

STRATEGIES = {
    "queue": "hardood queue",
    "random": "random sample",
    "classifier": "classifier score only",
}
DEMO = DemoConfig()
# W-OoD settings of every cell: the demo's, fixed before any run, so nothing is tuned on the world
# this bench reports (the exploratory runs that checked them used world seed 1)
EPOCHS, LR = DEMO.wood_epochs, DEMO.wood_lr


def queue_order(ws: Path, world, checkpoint: Path, size: int) -> list[str]:
    """Pool file names in review-queue order (one per near-duplicate group)."""
    db = ws / "curation.db"
    config = cfg.replace(MINE_PRESETS["world"], db=db, checkpoint=checkpoint,
                         pool=(str(world.pool_dir),), queue_size=size, min_hardness=0.0)  # fmt: skip
    mine(config, log=lambda line: print(f"  mine: {line}"))
    with store.connect(db) as conn:
        return [Path(p).name for p in queue_frame(conn)["path"]]


def classifier_order(ws: Path) -> list[str]:
    """Every pool file by the baseline's top-class probability, hardest first (ties by name)."""
    with store.connect(ws / "curation.db") as conn:
        rows = conn.execute(
            "SELECT p.relpath, s.top_score FROM scores s JOIN image_paths p USING (sha256) "
            "WHERE s.checkpoint_sha256 = (SELECT checkpoint_sha256 FROM runs "
            "WHERE command = 'mine' ORDER BY run_id DESC LIMIT 1)"
        ).fetchall()
    frame = pd.DataFrame([(Path(r["relpath"]).name, r["top_score"]) for r in rows],
                         columns=["file", "score"])  # fmt: skip
    return frame.sort_values(["score", "file"], ascending=[False, True])["file"].tolist()


def verdicts(truth: pd.DataFrame, seed: int, error_rate: float) -> dict[str, bool]:
    """file -> judged "no foreground": the truth, flipped with ``error_rate`` (one draw per file,
    so an image gets the same verdict under every strategy and budget of a seed)."""
    files = sorted(truth["file"])
    flips = np.random.default_rng([seed, 31337]).random(len(files)) < error_rate
    empty = dict(zip(truth["file"], truth["objects"] == ""))
    return {f: empty[f] != flip for f, flip in zip(files, flips)}


def spend(order: list[str], budget: int, judged_empty: dict[str, bool]) -> list[str]:
    """The first ``budget`` images of ``order`` that the annotators call no_foreground."""
    if len(order) < budget:
        raise SystemExit(f"the order holds only {len(order)} images; lower the budget {budget}")
    return sorted(f for f in order[:budget] if judged_empty[f])


def evaluate(checkpoint: Path, world, cam_dir: Path) -> dict:
    return evaluate_on_val(checkpoint, world, cam_dir, DEMO.cam_scales)


def run_cell(
    ws: Path, world, base_cfg, baseline: Path, ood: list[str], seed: int, tag: str, epochs: int,
    lr: float,
) -> dict:  # fmt: skip
    """W-OoD from the baseline on ``ood`` (pool file names), scored on val; cached by its key.

    Images load in the cell's own process (``num_workers=0``): a cell is a spawned process, so a
    loader worker would be a fresh interpreter that imports torch again for every OoD round.
    """
    settings = dict(epochs=epochs, lr=lr, centers=DEMO.num_centers, seed=seed, scales=DEMO.cam_scales,
                    baseline=read_checkpoint(baseline)["weights_sha256"])  # fmt: skip
    key = hashlib.sha256(json.dumps([ood, settings], default=str).encode()).hexdigest()[:16]
    out = ws / "cells" / f"{tag}-{key}"
    result_path = out / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "ood_list.txt").write_text("".join(f"{f}\n" for f in ood))
    started = time.time()
    result = train(cfg.replace(
        base_cfg, init_checkpoint=baseline, out_dir=out / "run", epochs=epochs, seed=seed,
        frozen_bn=True, val_split=None, lr=lr, num_centers=min(DEMO.num_centers, len(ood)),
        ood_manifest=out / "ood_list.txt", ood_image_root=world.pool_dir, num_workers=0,
    ))  # fmt: skip
    scores = evaluate(result.checkpoint, world, out / "cams")
    scores["seconds"] = time.time() - started
    result_path.write_text(json.dumps(scores))
    return scores


def table(frame: pd.DataFrame, base: dict, seeds: int) -> str:
    """Markdown table: one row per strategy and budget, mean (and min-max over seeds)."""

    def cell(values: pd.Series, scale: float, digits: int) -> str:
        text = f"{scale * values.mean():.{digits}f}"
        if seeds > 1:
            text += f" ({scale * values.min():.{digits}f}-{scale * values.max():.{digits}f})"
        return text

    lines = ["| strategy | verdicts | hard OoDs found | no-foreground images | CAM mIoU | "
             "mIoU gain | spurious rate |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (strategy, budget), group in frame.groupby(["strategy", "budget"], sort=False):
        gain = 100 * (group["miou"] - base["miou"])
        lines.append(f"| {STRATEGIES[strategy]} | {budget} | {group['hard'].mean():.0f} | "
                     f"{group['kept'].mean():.0f} | {cell(group['miou'], 100, 1)} | "
                     f"{gain.mean():+.1f} | {cell(group['spurious'], 1, 3)} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("benches/_label_efficiency"))
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the world reported on")
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES)
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per cell")
    parser.add_argument("--baseline", type=Path, help="baseline checkpoint (default: train one)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="W-OoD epochs per cell")
    parser.add_argument("--lr", type=float, default=LR, help="W-OoD learning rate")
    parser.add_argument("--jobs", type=int, default=2,
                        help="cells trained at once, one core each (1: one process, all cores)")  # fmt: skip
    parser.add_argument(
        "--plot", type=Path, help="PNG to write (default: workspace/label_efficiency.png)"
    )
    args = parser.parse_args()
    started = time.time()
    ws, world, base_cfg, baseline = world_and_baseline(
        args.workspace, args.world_seed, args.baseline
    )
    truth = read_pool_truth(world.root)
    orders = {"queue": queue_order(ws, world, baseline, max(args.budgets))}
    orders["classifier"] = classifier_order(ws)
    sha = read_checkpoint(baseline)["weights_sha256"]
    base = evaluate(Path(baseline), world, ws / f"baseline_cams-{sha[:12]}")
    kind = dict(zip(truth["file"], truth["kind"]))
    cells = [
        (s, b, seed) for seed in range(args.seeds) for s in args.strategies for b in args.budgets
    ]
    rows, tasks = [], []
    for strategy, budget, seed in cells:
        judged = verdicts(truth, seed, SimulatedTeam().error_rate)
        order = orders.get(strategy) or list(
            np.random.default_rng([seed, 27644437]).permutation(sorted(truth["file"]))
        )
        ood = spend(order, budget, judged)
        rows.append({"strategy": strategy, "budget": budget, "seed": seed, "kept": len(ood),
                     "hard": sum(kind[f] == "hard_ood" for f in ood), **base, "seconds": 0.0})  # fmt: skip
        if ood:  # nothing confirmed: the baseline itself
            tasks.append((len(rows) - 1, (ws, world, base_cfg, Path(baseline), ood, seed,
                                          f"{strategy}-B{budget}-s{seed}", args.epochs, args.lr)))  # fmt: skip
    for (row, _), scores in zip(tasks, run_cells(run_cell, [task for _, task in tasks], args.jobs)):
        rows[row].update(scores)
    frame = pd.DataFrame(rows)
    frame.to_csv(ws / "label_efficiency.csv", index=False)
    print(f"\nworld seed {args.world_seed}; baseline CAM mIoU {100 * base['miou']:.1f}, spurious "
          f"{base['spurious']:.3f}; {args.seeds} seeds; CAMs on val at scales {DEMO.cam_scales} "
          f"with flips; W-OoD {args.epochs} epoch(s) at lr {args.lr}\n")  # fmt: skip
    print(table(frame, base, args.seeds))
    lines = []
    for strategy in args.strategies:
        stats = (
            frame[frame.strategy == strategy].groupby("budget")["miou"].agg(["mean", "min", "max"])
        )
        lines.append(Line(STRATEGIES[strategy], tuple(stats.index), tuple(100 * stats["mean"]),
                          tuple(100 * stats["min"]), tuple(100 * stats["max"])))  # fmt: skip
    plot = line_chart(lines, args.plot or ws / "label_efficiency.png",
                      f"W-OoD from one baseline, {args.seeds} seed(s): min-max shaded",
                      "verdicts spent", "CAM mIoU on val (%)",
                      reference=(f"baseline {100 * base['miou']:.1f}", 100 * base["miou"]))  # fmt: skip
    print(f"\nplot: {plot}; total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
