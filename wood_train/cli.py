"""The trainer room's commands: ``world``, ``train``, ``cam``, ``evaluate``.

Each ``add_*`` fills in a subcommand's parser from its config dataclass and imports nothing heavy,
so ``hardood <cmd> --help`` is instant; each ``run_*`` imports its stage only when it runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wood_train import config as cfg
from wood_train.cam.config import CamConfig, EvalConfig
from wood_train.train_config import PRESETS as TRAIN_PRESETS
from wood_train.train_config import TrainConfig
from wood_train.world.config import WORLD_PRESETS, WorldConfig


def add_world(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Generate the spurious-cue world: a VOC-layout dataset whose classes come with context "
        "cues, an unlabelled pool (hard OoDs, easy OoDs, contamination, near-duplicates) and the "
        "pool's truth. The same config always writes the same files."
    )
    parser.add_argument("--out", type=Path, required=True, help="world folder to write")
    parser.add_argument("--force", action="store_true", help="replace a different world in --out")
    cfg.add_stage_args(parser, WorldConfig, WORLD_PRESETS, "default")
    parser.set_defaults(func=run_world)


def run_world(args: argparse.Namespace) -> int:
    from wood_train.world.generate import find_world, generate_world, read_world_info

    config = cfg.config_from_args(args, WorldConfig, WORLD_PRESETS)
    start = time.perf_counter()
    reused = find_world(args.out, config) is not None
    paths = generate_world(config, args.out, force=args.force)
    counts = read_world_info(paths.root)["counts"]
    kinds = ", ".join(f"{kind} {n}" for kind, n in counts["pool_kinds"].items())
    print(
        f"world: {paths.root} ({'reused' if reused else 'written'}; train {counts['train']}, "
        f"val {counts['val']}; pool {counts['pool']}: {kinds}, of which "
        f"{counts['pool_duplicates']} near-duplicates) in {time.perf_counter() - start:.1f} s"
    )
    return 0


def add_train(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train the CAM classifier. Without --ood-manifest: the baseline (WOOD_SPEC section 1). "
        "With --ood-manifest MANIFEST: W-OoD (section 3), starting from --init-checkpoint. "
        "Re-running the same command resumes an interrupted run or reuses a finished one."
    )
    cfg.add_stage_args(parser, TrainConfig, TRAIN_PRESETS, "world")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from wood_train.train import train

    config = cfg.config_from_args(args, TrainConfig, TRAIN_PRESETS)
    result = train(config)
    metrics = "".join(
        f"; {k} {v:.4f}" for k, v in result.val_metrics.items() if isinstance(v, float)
    )
    selected = f"epoch {result.selected_epoch} of {config.epochs} selected{metrics}"
    if result.status == "reused":
        print(
            f"train: reused {result.checkpoint}, a finished run of this config and these inputs "
            f"({selected}); use another --out-dir to train again"
        )
    else:
        print(f"train: {result.checkpoint} ({selected}; {result.seconds:.0f} s)")
    return 0


def add_cam(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compute multi-scale + flip CAMs for every image of a split and save them as "
        "<out>/<id>.npy (IRN layout). Existing files are kept, so a re-run resumes."
    )
    cfg.add_stage_args(parser, CamConfig)
    parser.set_defaults(func=run_cam)


def run_cam(args: argparse.Namespace) -> int:
    import yaml

    from wood_train.cam.make import CONFIG_NAME, make_cams

    config = cfg.config_from_args(args, CamConfig)
    out_dir = make_cams(config)
    summary = yaml.safe_load((out_dir / CONFIG_NAME).read_text())["summary"]
    print(
        f"cam: {summary['n_images']} images of split {config.split!r} -> {out_dir} "
        f"({summary['written']} written, {summary['already_present']} already present, "
        f"{summary['seconds']:.1f}s on {summary['device']})"
    )
    return 0


def add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Evaluate <cam-dir>/<id>.npy CAMs against the split's masks over a sweep of background "
        "thresholds; print the per-class IoU table and write a JSON file."
    )
    cfg.add_stage_args(parser, EvalConfig)
    parser.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from wood_train.cam.evaluate import format_table, run_evaluation

    print(format_table(run_evaluation(cfg.config_from_args(args, EvalConfig))))
    return 0
