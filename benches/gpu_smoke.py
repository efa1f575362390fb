"""Helper of ``benches/gpu_smoke.sh``: prepares its inputs, and reports img/s against FLOPs.

``prepare`` writes a world at VOC size (images drawn at 448 px, then resized to 500 x 375 and
375 x 500), a ResNet-50 weights file (yours with ``--backbone-weights``, else random weights with
calibrated BatchNorm, see ``benches/voc12_smoke.py``), the hard-OoD list, and ``smoke.env`` for the
shell script. ``report`` reads what the four stages wrote and prints one row per stage: the
measured img/s, the FLOPs per image (counted with ``torch.utils.flop_counter`` on the meta device,
at the sizes the run used), and the img/s to expect on an A100 and an H100 from those FLOPs.

An expected figure is ``min(peak bf16 FLOP/s x UTILISATION / FLOPs per image, loader ceiling)``.
``UTILISATION`` is an assumption (a ResNet-50 in eager PyTorch with bf16 autocast keeps roughly a
fifth of a card's dense bf16 peak busy); the loader ceiling is measured here, on this machine's CPU,
as decode + transform img/s per worker process times the workers the stage used. These are
estimates until the script has been run on such a card.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.voc12_smoke import _to_voc_shapes, calibrate_batchnorm  # noqa: E402
from wood_train.cam.make import CamInferenceDataset  # noqa: E402
from wood_train.data.imageio import read_image  # noqa: E402
from wood_train.data.transforms import TrainTransform, resize_long_side  # noqa: E402
from wood_train.data.voc import image_path, read_split  # noqa: E402
from wood_train.model.cam_net import build_cam_net  # noqa: E402
from wood_train.world.config import WorldConfig  # noqa: E402
from wood_train.world.generate import generate_world  # noqa: E402

UTILISATION = 0.2
PEAK_BF16_TFLOPS = {"A100": 312.0, "H100 SXM": 989.0}  # dense bf16 tensor-core peaks
CARD_PEAKS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))
SCALES = {
    # full: what a GPU user runs; tiny: a quick CPU check of the script itself
    "full": dict(world=WorldConfig(image_size=448, n_train=512, n_val=100, n_pool_hard=400,
                                   n_pool_easy=400, n_pool_contaminated=150, n_pool_duplicates=50),
                 batch=16, ood_batch=16, centers=50, crop=512, resize_long=(320, 640), mine_size=448),
    "tiny": dict(world=WorldConfig(image_size=64, n_train=16, n_val=4, n_pool_hard=12,
                                   n_pool_easy=8, n_pool_contaminated=4, n_pool_duplicates=2),
                 batch=4, ood_batch=4, centers=4, crop=64, resize_long=(56, 80), mine_size=64),
}  # fmt: skip
SMOKE_LR = 0.001  # random stand-in weights diverge at the preset's 0.1 (benches/voc12_smoke.py)


def prepare(work: Path, scale: str, backbone_weights: Path | None) -> Path:
    """World, weights, OoD list and ``smoke.env``; returns the env file."""
    settings = SCALES[scale]
    paths = generate_world(settings["world"], work / "world")
    marker = work / "world" / ".voc_shapes"
    if scale == "full" and not marker.is_file():
        _to_voc_shapes(paths.voc_root)
        marker.touch()
    weights = backbone_weights
    if weights is None:
        weights = work / "resnet50_random_bn.pth"
        if not weights.is_file():
            subset = work / "calibration.txt"
            subset.write_text("".join(f"{i}\n" for i in read_split(paths.voc_root, "train")[:8]))
            calibrate_batchnorm(paths.voc_root, subset, weights)
    truth = pd.read_csv(paths.truth_csv)
    ood_list = work / "ood_list.txt"
    hard = sorted(truth.loc[truth["kind"] == "hard_ood", "file"])
    ood_list.write_text("".join(f"{name}\n" for name in hard))
    env = {
        "VOC_ROOT": paths.voc_root, "POOL": paths.pool_dir, "WEIGHTS": weights,
        "OOD_LIST": ood_list, "LR": SMOKE_LR if backbone_weights is None else 0.1,
        "BATCH": settings["batch"], "OOD_BATCH": settings["ood_batch"],
        "CENTERS": settings["centers"], "CROP": settings["crop"],
        "RESIZE_LONG": " ".join(map(str, settings["resize_long"])),
        "MINE_SIZE": settings["mine_size"],
    }  # fmt: skip
    env_file = work / "smoke.env"
    env_file.write_text("".join(f'{k}="{v}"\n' for k, v in env.items()))
    return env_file


# ---- FLOPs per image --------------------------------------------------------------------------


def _model():
    with torch.device("meta"):
        model = build_cam_net("resnet50", 20, output_stride=16, frozen_bn=True)
    model.parameter_groups(freeze_stem=True)  # the preset's: conv1/bn1 get no gradient
    return model


def _count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def train_flops(crop: int) -> float:
    """Forward + backward of one image at ``crop`` x ``crop`` (BCE step)."""
    model, x = _model(), torch.empty(2, 3, crop, crop, device="meta")
    return _count(lambda: model(x).sum().backward()) / 2


def climb_flops(crop: int) -> float:
    """W-OoD's adversarial climb on one OoD image: a forward and a backward to the input only."""
    model = _model()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.empty(2, 3, crop, crop, device="meta", requires_grad=True)
    return _count(lambda: model(x).amax(1).sum().backward()) / 2


def wood_flops(crop: int, batch: int, ood_batch: int) -> float:
    """One W-OoD step per in-distribution image: ID and OoD forward/backward plus the climb."""
    per_step = train_flops(crop) * (batch + ood_batch) + climb_flops(crop) * ood_batch
    return per_step / batch


def forward_flops(height: int, width: int) -> float:
    model, x = _model(), torch.empty(1, 3, height, width, device="meta")
    with torch.no_grad():
        return _count(lambda: model.cam(x))


def cam_flops(sizes: list[tuple[int, int]], scales: tuple[float, ...]) -> float:
    """Mean over images of the multi-scale CAM forwards, each scale with its flip."""
    per_size = {
        size: sum(2 * forward_flops(round(size[0] * s), round(size[1] * s)) for s in scales)
        for size in set(sizes)
    }
    return sum(per_size[size] for size in sizes) / len(sizes)


def expected_rate(flops_per_image: float, peak_tflops: float, loader_ceiling: float) -> float:
    return min(peak_tflops * 1e12 * UTILISATION / flops_per_image, loader_ceiling)


# ---- what the stages measured -----------------------------------------------------------------


def _train_rate(run: Path) -> tuple[float, dict]:
    log = pd.read_csv(run / "train_log.csv")
    rates = list(log["images_per_s"])[1:] or list(log["images_per_s"])  # first row: warm-up
    config = yaml.safe_load((run / "config.yaml").read_text())["config"]
    return statistics.median(rates), config


def _loader_rate(fn, items: list, seconds: float = 3.0) -> float:
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn(items[done % len(items)])
        done += 1
    return done / (time.perf_counter() - start)


def report(work: Path) -> None:
    baseline_rate, config = _train_rate(work / "runs" / "baseline")
    wood_rate, wood_config = _train_rate(work / "runs" / "wood")
    voc_root = Path(config["voc_root"])
    cam_doc = yaml.safe_load((work / "cams" / "config.yaml").read_text())
    cam_summary, cam_config = cam_doc["summary"], cam_doc["config"]
    cam_rate = cam_summary["written"] / cam_summary["seconds"]
    mine_log = (work / "mine.log").read_text()
    match = re.search(r"score: (\d+) images scored.*\[([\d.]+) s, ([\d.]+) img/s\]", mine_log)
    mine_rate = float(match.group(3)) if match else float("nan")
    with sqlite3.connect(work / "curation.db") as conn:
        mine_config = yaml.safe_load(conn.execute("SELECT config_json FROM runs").fetchone()[0])
    val_ids = read_split(voc_root, cam_config["split"])
    sizes = [read_image(image_path(voc_root, i)).shape[:2] for i in val_ids]
    crop, mine_size = config["crop"], mine_config["image_size"]

    ids = read_split(voc_root, "train")[:16]
    images = [read_image(image_path(voc_root, i)) for i in ids]
    transform = TrainTransform(tuple(config["resize_long"]), crop, True)
    rng = np.random.default_rng(0)
    train_loader = _loader_rate(lambda i: transform(i, rng), images)
    cam_items = CamInferenceDataset(voc_root, val_ids[:8], np.zeros((len(val_ids[:8]), 1)))
    cam_loader = _loader_rate(lambda k: cam_items[k], list(range(len(cam_items))))
    pool_files = sorted(Path(mine_config["pool"][0]).glob("*.jpg"))[:16]
    mine_loader = _loader_rate(lambda p: resize_long_side(read_image(p), mine_size), pool_files)

    stages = [
        ("train (baseline)", baseline_rate, train_flops(crop), train_loader * config["num_workers"]),
        ("train (W-OoD)", wood_rate,
         wood_flops(crop, wood_config["batch_size"], wood_config["ood_batch_size"]),
         # the ID and the OoD stream each have their own num_workers loader processes
         train_loader * wood_config["num_workers"]
         * min(1.0, wood_config["batch_size"] / wood_config["ood_batch_size"])),
        ("cam (4 scales + flips)", cam_rate, cam_flops(sizes, tuple(cam_config["scales"])),
         cam_loader * max(1, cam_config["num_workers"])),
        ("mine (score)", mine_rate, forward_flops(mine_size, mine_size),
         mine_loader * max(1, mine_config["workers"] or 1)),
    ]  # fmt: skip
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    card = next((peak for name, peak in CARD_PEAKS if name in device), None)
    print(f"\ngpu smoke on {device}; faiss GPUs: {_faiss_gpus()}; assumed utilisation "
          f"{UTILISATION:.0%} of dense bf16 peak; loader ceilings measured on this CPU")  # fmt: skip
    header = "| stage | measured img/s | GFLOPs / img | loader ceiling img/s | expected A100 | expected H100 SXM |"
    if card:
        header += " expected this card |"
    print(header + "\n" + "|---" * (header.count("|") - 1) + "|")
    for name, measured, flops, ceiling in stages:
        row = [name, f"{measured:.1f}", f"{flops / 1e9:.0f}", f"{ceiling:.0f}"]
        row += [f"{expected_rate(flops, p, ceiling):.0f}" for p in PEAK_BF16_TFLOPS.values()]
        if card:
            row.append(f"{expected_rate(flops, card, ceiling):.0f}")
        print("| " + " | ".join(row) + " |")
    counts = Counter(sizes)
    print("CAM image sizes: " + ", ".join(f"{h}x{w} ({n})" for (h, w), n in counts.items()))


def _faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare")
    prep.add_argument("--work", type=Path, required=True)
    prep.add_argument("--scale", choices=sorted(SCALES), default="full")
    prep.add_argument("--backbone-weights", type=Path, default=None)
    rep = sub.add_parser("report")
    rep.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "prepare":
        args.work.mkdir(parents=True, exist_ok=True)
        print(prepare(args.work, args.scale, args.backbone_weights))
    else:
        report(args.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
