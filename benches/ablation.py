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
CAM mIoU and the spurious-activation rate are measured on the world's ``train`` split (the split
WSSS seeds are reported on); no arm selects on it (fixed epochs, last epoch kept).

    python benches/ablation.py                 # the README table
    python benches/ablation.py --seeds 1 --epochs 1 --n-ood 64   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.demo.simulated_annotators import truth_by_sha  # noqa: E402
from curate import store  # noqa: E402
from curate.mine import mine  # noqa: E402
from curate.mine_config import PRESETS as MINE_PRESETS  # noqa: E402
from curate.queue.build import queue_frame  # noqa: E402
from wood_train import config as cfg  # noqa: E402
from wood_train.cam.evaluate import evaluate_cams  # noqa: E402
from wood_train.cam.make import CamConfig, make_cams  # noqa: E402
from wood_train.data.voc import read_split  # noqa: E402
from wood_train.train import train  # noqa: E402
from wood_train.train_config import PRESETS  # noqa: E402
from wood_train.world.config import WORLD_PRESETS  # noqa: E402
from wood_train.world.generate import generate_world  # noqa: E402
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


def evaluation_split(ws: Path, world, n: int) -> str:
    """The first ``n`` ids of the world's train split (all of them when n is 0), as a list file."""
    ids = read_split(world.voc_root, "train")
    path = ws / f"eval_train_{n or len(ids)}.txt"
    path.write_text("".join(f"{i}\n" for i in (ids[:n] if n else ids)))
    return str(path)


def evaluate(checkpoint: Path, world, cam_dir: Path, scales, split: str) -> dict:
    make_cams(CamConfig(checkpoint=checkpoint, voc_root=world.voc_root, split=split, out_dir=cam_dir,
                        scales=scales, num_workers=0))  # fmt: skip
    result = evaluate_cams(cam_dir, world.voc_root, split)
    return {"miou": result.miou, "spurious": result.spurious_activation_rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("benches/_ablation"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=1, help="epochs each arm trains from the baseline"
    )
    parser.add_argument("--n-ood", type=int, default=160, help="OoD images per arm")
    parser.add_argument(
        "--scales", type=float, nargs="+", default=[1.0], help="CAM scales (each with flip)"
    )
    parser.add_argument(
        "--lr", type=float, default=0.002, help="learning rate of the continued training"
    )
    parser.add_argument(
        "--eval-images", type=int, default=300, help="first N train images scored; 0 = all"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    ws = args.workspace
    ws.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    world = generate_world(WORLD_PRESETS["default"], ws / "world")
    base_cfg = cfg.replace(PRESETS["world"], voc_root=world.voc_root, out_dir=ws / "baseline")
    baseline = train(base_cfg)
    print(f"baseline: {baseline.checkpoint} ({time.time() - t0:.0f} s so far)")
    lists = {"hard": hard_ood_list(ws, world, baseline.checkpoint, args.n_ood)}
    split = evaluation_split(ws, world, args.eval_images)
    rows = []
    for seed in range(args.seeds):
        lists["random"] = random_ood_list(world, args.n_ood, seed)
        for arm, spec in ARMS.items():
            out = ws / "arms" / f"{arm.split()[0]}-seed{seed}"
            changes = dict(init_checkpoint=baseline.checkpoint, out_dir=out / "run", epochs=args.epochs,
                           seed=seed, frozen_bn=True, val_split=None, lr=args.lr, num_centers=20,
                           ood_as_negatives=spec.get("ood_as_negatives", False))  # fmt: skip
            if spec["ood"]:
                ood_file = out / "ood_list.txt"
                out.mkdir(parents=True, exist_ok=True)
                ood_file.write_text("".join(f"{f}\n" for f in lists[spec["ood"]]))
                changes.update(ood_manifest=ood_file, ood_image_root=world.pool_dir)
            started = time.time()
            result = train(cfg.replace(base_cfg, **changes))
            wall = time.time() - started
            scores = evaluate(result.checkpoint, world, out / "cams", tuple(args.scales), split)
            rows.append({"arm": arm, "seed": seed, **scores, "train_seconds": wall})
            print(f"  {arm:28s} seed {seed}: mIoU {scores['miou']:.3f} spurious {scores['spurious']:.3f} "
                  f"({wall:.0f} s train)")  # fmt: skip
    base_scores = evaluate(
        baseline.checkpoint, world, ws / "baseline_cams", tuple(args.scales), split
    )
    frame = pd.DataFrame(rows)
    table = frame.groupby("arm", sort=False).agg(
        miou_mean=("miou", "mean"), miou_std=("miou", "std"),
        spurious_mean=("spurious", "mean"), spurious_std=("spurious", "std"),
        train_seconds=("train_seconds", "mean"),
    )  # fmt: skip
    print(
        f"\nstarting baseline checkpoint: mIoU {base_scores['miou']:.3f}, spurious {base_scores['spurious']:.3f}"
    )
    print(
        f"{args.seeds} seeds, {args.epochs} epochs per arm, {args.n_ood} OoD images, CAM scales "
        f"{args.scales} with flips, first {args.eval_images or 'all'} train images\n"
    )
    print("| arm | CAM mIoU | spurious-activation rate | train wall s |")
    print("|---|---|---|---|")
    for arm, r in table.iterrows():
        print(f"| {arm} | {100 * r.miou_mean:.1f} ± {100 * np.nan_to_num(r.miou_std):.1f} | "
              f"{r.spurious_mean:.3f} ± {np.nan_to_num(r.spurious_std):.3f} | {r.train_seconds:.0f} |")  # fmt: skip
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"rows": rows, "baseline": base_scores, "args": vars(args)}, default=str, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
