"""Does W-OoD do what the paper says? Five arms on the spurious-cue world, several seeds.

Every arm starts from the same baseline checkpoint and trains the same number of steps with the
same number of OoD images:

1. baseline continued without OoD data
2. hard OoDs as all-negative images (BCE only)
3. random pool OoDs (not ranked) as all-negative images
4. W-OoD with random pool OoDs
5. W-OoD with hard OoDs (the full method)

Hard OoDs come from curate's review queue (``hardood mine`` on the baseline), in queue order,
with the pool truth standing in for the annotators (it drops queue images that contain an object).
Random OoDs are drawn uniformly from the pool images that contain no object (the same annotator
check applied to an unranked sample), so arms 3-4 differ from 2 and 5 only in hardness.

CAM mIoU and the spurious-activation rate are measured on the world's held-out ``val`` split, all
of it, at the demo's scales (1, 0.5, 1.5, 2) with flips. Nothing is selected on it: the baseline
and every arm train a fixed number of epochs and keep the last. The settings are the demo's W-OoD
settings (2 epochs at lr 0.002, K = 20), fixed before any run, and 120 OoD images per arm (what
the queue of a world-seed-1 pool confirms comfortably); the default report is on world seed 0.
``--jobs`` trains several arms at once, one core each.

    python benches/ablation.py                                            # the README table
    python benches/ablation.py --seeds 1 --epochs 1 --n-ood 64 --baseline CK   # a quick look
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

from app.demo.simulated_annotators import truth_by_sha  # noqa: E402
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

ARMS = {
    "1 baseline, no OoD": dict(ood=None),
    "2 hard OoD as negatives": dict(ood="hard", ood_as_negatives=True),
    "3 random OoD as negatives": dict(ood="random", ood_as_negatives=True),
    "4 W-OoD, random OoD": dict(ood="random"),
    "5 W-OoD, hard OoD (full)": dict(ood="hard"),
}


def hard_ood_list(ws: Path, world, baseline_ckpt: Path, n: int) -> list[str]:
    """The first ``n`` queue images that the (truth-standing-in) annotators call no_foreground."""
    db = ws / "ablation.db"
    config = cfg.replace(MINE_PRESETS["world"], db=db, checkpoint=baseline_ckpt, pool=(str(world.pool_dir),),
                         queue_size=4 * n)  # fmt: skip
    mine(config, log=lambda line: print(f"  mine: {line}"))
    with store.connect(db) as conn:
        contains = truth_by_sha(conn, read_pool_truth(world.root), world.pool_dir)
        queue = queue_frame(conn)
    kept = [Path(p).name for p, sha in zip(queue.path, queue.sha256) if not contains[sha]]
    if len(kept) < n:
        raise SystemExit(f"the queue holds only {len(kept)} confirmed hard OoDs; lower --n-ood")
    return kept[:n]


def random_ood_list(world, n: int, seed: int) -> list[str]:
    truth = read_pool_truth(world.root)
    clean = truth[truth.objects.isna() | (truth.objects == "")].file.tolist()
    return sorted(np.random.default_rng(seed).choice(clean, n, replace=False).tolist())


def spread(values: pd.Series, scale: float, digits: int) -> str:
    """``mean ± std`` over seeds; the mean alone for one seed (a spread of one run means nothing)."""
    text = f"{scale * values.mean():.{digits}f}"
    return text if len(values) < 2 else f"{text} ± {scale * values.std():.{digits}f}"


def verdict_lines(frame: pd.DataFrame) -> list[str]:
    """The issue's three targets, measured: gains over arms 1 and 4, the spurious-rate drop."""
    by_arm = {arm.split()[0]: group for arm, group in frame.groupby("arm", sort=False)}
    full, plain, random_wood = by_arm["5"], by_arm["1"], by_arm["4"]
    gain_plain = 100 * (full.miou.mean() - plain.miou.mean())
    gain_random = 100 * (full.miou.mean() - random_wood.miou.mean())
    drop = 1 - full.spurious.mean() / plain.spurious.mean()
    lines = [
        f"full W-OoD vs arm 1 (no OoD): {gain_plain:+.1f} mIoU points (target >= +5)",
        f"full W-OoD vs arm 4 (W-OoD, random OoD): {gain_random:+.1f} points (target >= +3)",
        f"spurious-activation rate, arm 5 vs arm 1: {drop:.0%} lower (target >= 33%)",
    ]
    if len(full) > 1:
        apart = full.miou.min() > random_wood.miou.max()
        lines.append(f"arm 5 min {100 * full.miou.min():.1f} vs arm 4 max "
                     f"{100 * random_wood.miou.max():.1f}: ranges {'apart' if apart else 'overlap'}")  # fmt: skip
    return lines


def run_arm(ws: Path, world, base_cfg, baseline: Path, arm: str, spec: dict, ood: list[str] | None,
            seed: int, args) -> dict:  # fmt: skip
    """Train one arm from the baseline and score it; cached by a key of its inputs."""
    settings = [read_checkpoint(baseline)["weights_sha256"], arm, ood, seed, args.epochs, args.lr,
                args.scales]  # fmt: skip
    key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:12]
    out = ws / "arms" / f"{arm.split()[0]}-seed{seed}-{key}"
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    # an arm is a spawned process: its images load in it (see label_efficiency.run_cell)
    changes = dict(init_checkpoint=baseline, out_dir=out / "run", epochs=args.epochs, seed=seed,
                   frozen_bn=True, val_split=None, lr=args.lr, num_centers=20,
                   ood_as_negatives=spec.get("ood_as_negatives", False), num_workers=0)  # fmt: skip
    if ood:
        out.mkdir(parents=True, exist_ok=True)
        (out / "ood_list.txt").write_text("".join(f"{f}\n" for f in ood))
        changes.update(ood_manifest=out / "ood_list.txt", ood_image_root=world.pool_dir)
    started = time.time()
    result = train(cfg.replace(base_cfg, **changes))
    scores = {**evaluate_on_val(result.checkpoint, world, out / "cams", args.scales),
              "train_seconds": time.time() - started}  # fmt: skip
    done.write_text(json.dumps(scores))
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("benches/_ablation"))
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the world reported on")
    parser.add_argument("--baseline", type=Path, help="baseline checkpoint (default: train one)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs each arm trains from the baseline"
    )
    parser.add_argument("--n-ood", type=int, default=120, help="OoD images per arm")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5, 2.0],
                        help="CAM scales (each with its flip)")  # fmt: skip
    parser.add_argument(
        "--lr", type=float, default=0.002, help="learning rate of the continued training"
    )
    parser.add_argument("--jobs", type=int, default=2,
                        help="arms trained at once, one core each (1: one process, all cores)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    t0 = time.time()
    ws, world, base_cfg, baseline = world_and_baseline(
        args.workspace, args.world_seed, args.baseline
    )
    lists = {"hard": hard_ood_list(ws, world, baseline, args.n_ood)}
    tasks = []
    for seed in range(args.seeds):
        lists["random"] = random_ood_list(world, args.n_ood, seed)
        for arm, spec in ARMS.items():
            ood = lists[spec["ood"]] if spec["ood"] else None
            tasks.append((ws, world, base_cfg, Path(baseline), arm, spec, ood, seed, args))
    rows = []
    for task, scores in zip(tasks, run_cells(run_arm, tasks, args.jobs, desc="arms")):
        arm, seed = task[4], task[7]
        rows.append({"arm": arm, "seed": seed, **scores})
        print(f"  {arm:28s} seed {seed}: mIoU {scores['miou']:.3f} spurious {scores['spurious']:.3f} "
              f"({scores['train_seconds']:.0f} s train)")  # fmt: skip
    sha = read_checkpoint(baseline)["weights_sha256"]
    base_scores = evaluate_on_val(
        Path(baseline), world, ws / f"baseline_cams-{sha[:12]}", tuple(args.scales)
    )
    frame = pd.DataFrame(rows)
    print(f"\nstarting baseline checkpoint: mIoU {100 * base_scores['miou']:.1f}, "
          f"spurious {base_scores['spurious']:.3f}")  # fmt: skip
    print(f"world seed {args.world_seed}; {args.seeds} seed(s), {args.epochs} epoch(s) per arm at lr "
          f"{args.lr}, {args.n_ood} OoD images; CAMs on all of val at scales {args.scales} with flips\n")  # fmt: skip
    print("| arm | CAM mIoU | spurious-activation rate | train wall s |")
    print("|---|---|---|---|")
    for arm, group in frame.groupby("arm", sort=False):
        print(f"| {arm} | {spread(group.miou, 100, 1)} | {spread(group.spurious, 1, 3)} | "
              f"{group.train_seconds.mean():.0f} |")  # fmt: skip
    print("\n" + "\n".join(verdict_lines(frame)))
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "baseline": base_scores, "args": vars(args)},
                                        default=str, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
