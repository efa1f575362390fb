"""The `voc12` recipe end to end at full resolution on a CPU: shapes, memory and IRN's layout.

What runs, each as the `hardood` command a researcher types:

1. a world written at VOC size: images drawn at 448 px, then resized to VOC's 500 x 375 and
   375 x 500 (masks nearest-neighbour), so shapes are not square and not multiples of 16; the
   training list holds 4 images that cover every class (each class needs a prototype);
2. a randomly initialised ResNet-50 weights file standing in for ImageNet's (torchvision layout),
   its BatchNorm statistics calibrated on a few world images (``calibrate_batchnorm``). The preset
   freezes BatchNorm; with the initial statistics (mean 0, variance 1) activations grow through the
   50 layers and the loss diverges within two steps, as ImageNet weights never do;
3. ``train --preset voc12`` for 2 steps with W-OoD (crop 512, output stride 16, frozen BatchNorm)
   at batch 2 + 2 OoD images and K = 2 centres so it fits a CPU, and lr 0.001 instead of the
   preset's 0.1 (see ``SMOKE_LR``);
4. ``cam`` at the preset's 4 scales with flips on 2 images; ``evaluate`` on them;
5. ``mine --preset voc12`` on 20 pool images.

The checks (``check_outputs``) are what the test asserts: the checkpoint is the reference model,
every loss is finite, each CAM file has ``high_res`` at image size and IRN's stride-4 ``cam``, and
every pool image is scored. Run ``python benches/voc12_smoke.py`` for the table with seconds and
peak RSS per stage (each stage in its own process, its ``VmHWM``). It takes minutes on a CPU, so
it is a bench, not a test; ``tests/wood_train/test_voc.py`` and ``test_irn_handoff.py`` check the
same layout on small images in ``make test``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate import store  # noqa: E402
from wood_train.data.imageio import read_image, read_label_png, write_label_png  # noqa: E402
from wood_train.data.transforms import normalize_image, resize_long_side  # noqa: E402
from wood_train.data.voc import (  # noqa: E402
    image_path,
    load_image_labels,
    read_class_names,
    read_split,
)
from wood_train.model.checkpoint import read_checkpoint  # noqa: E402
from wood_train.world.config import WorldConfig  # noqa: E402
from wood_train.world.generate import generate_world  # noqa: E402

VOC_SHAPES = ((375, 500), (500, 375))  # (H, W): VOC's two most common image shapes
WORLD = WorldConfig(
    image_size=448,
    n_train=12,
    n_val=2,
    n_pool_hard=8,
    n_pool_easy=6,
    n_pool_contaminated=4,
    n_pool_duplicates=2,
)  # 20 pool images
BATCH, OOD_BATCH, CENTERS = 2, 2, 2
# The preset's lr (0.1, 1.0 on the classifier) is for ImageNet weights. On random weights it
# diverges even with calibrated BatchNorm (loss 1.6 -> 7e4 in two steps); uncalibrated, even this
# lr diverges (17.6 -> 409). So the smoke does both: calibrated statistics and this lr.
SMOKE_LR = 0.001
N_TRAIN = 4  # training images that cover every class (each needs a prototype): 2 steps of 2
CALIBRATION_SIDE = 320


@dataclass(frozen=True)
class SmokeInputs:
    work: Path
    voc_root: Path
    pool: Path
    weights: Path
    ood_list: Path
    train_list: Path

    @property
    def run_dir(self) -> Path:
        return self.work / "runs" / "voc12_wood"

    @property
    def cam_dir(self) -> Path:
        return self.work / "cams"

    @property
    def db(self) -> Path:
        return self.work / "curation.db"


def _to_voc_shapes(voc_root: Path) -> None:
    """Resize each image (bilinear) and its masks (nearest) to 500 x 375 or 375 x 500."""
    ids = read_split(voc_root, "train") + read_split(voc_root, "val")
    for index, image_id in enumerate(ids):
        height, width = VOC_SHAPES[index % 2]
        path = image_path(voc_root, image_id)
        Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR).save(path, quality=95)  # fmt: skip
        for folder in ("SegmentationClass", "CueMasks"):
            mask_file = voc_root / folder / f"{image_id}.png"
            if mask_file.is_file():
                mask = Image.fromarray(read_label_png(mask_file))
                write_label_png(np.asarray(mask.resize((width, height), Image.NEAREST)), mask_file)


@torch.no_grad()
def calibrate_batchnorm(voc_root: Path, train_list: Path, out: Path, seed: int = 0) -> Path:
    """Random ResNet-50 weights whose BatchNorm running statistics match world images.

    Every BatchNorm layer takes the cumulative mean/variance of its input over one train-mode
    pass (``momentum=None``) of the training images at ``CALIBRATION_SIDE`` px, so the frozen
    network starts with unit-scale activations, as an ImageNet-trained one does.
    """
    torch.manual_seed(seed)
    net = torchvision.models.resnet50(weights=None)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    side = CALIBRATION_SIDE * 3 // 4  # the short side after resizing a 4:3 image
    images = [
        normalize_image(resize_long_side(read_image(image_path(voc_root, i)), CALIBRATION_SIDE))
        for i in read_split(voc_root, str(train_list))
    ]
    net.train()(torch.stack([image[:, :side, :side] for image in images]))
    torch.save(net.state_dict(), out)
    return out


def _covering_ids(voc_root: Path, n: int) -> list[str]:
    """``n`` training ids that hold every class between them (greedy, then in file order)."""
    ids = read_split(voc_root, "train")
    labels = load_image_labels(voc_root, ids, len(read_class_names(voc_root)))
    chosen, covered = [], np.zeros(labels.shape[1], bool)
    while not covered.all() and len(chosen) < n:
        gains = (labels.astype(bool) & ~covered).sum(1)
        gains[chosen] = -1
        chosen.append(int(gains.argmax()))
        covered |= labels[chosen[-1]].astype(bool)
    chosen += [i for i in range(len(ids)) if i not in chosen][: n - len(chosen)]
    return [ids[i] for i in sorted(chosen)]


def prepare(work: Path) -> SmokeInputs:
    """World, training list, stand-in weights and the hard-OoD list under ``work``."""
    paths = generate_world(WORLD, work / "world")
    _to_voc_shapes(paths.voc_root)
    train_list = work / "train_smoke.txt"
    train_list.write_text("".join(f"{i}\n" for i in _covering_ids(paths.voc_root, N_TRAIN)))
    weights = calibrate_batchnorm(paths.voc_root, train_list, work / "resnet50_random_bn.pth")
    truth = pd.read_csv(paths.truth_csv)
    hard = sorted(truth.loc[truth["kind"] == "hard_ood", "file"])[:4]
    ood_list = work / "ood_list.txt"
    ood_list.write_text("".join(f"{name}\n" for name in hard))
    return SmokeInputs(work, paths.voc_root, paths.pool_dir, weights, ood_list, train_list)


def commands(inputs: SmokeInputs) -> list[tuple[str, list[str]]]:
    """(stage, hardood argv) in order; every value not given is the voc12 preset's."""
    s = {k: str(v) for k, v in vars(inputs).items()}
    return [
        ("train voc12 + W-OoD, 2 steps", [
            "train", "--preset", "voc12", "--voc-root", s["voc_root"], "--train-split", s["train_list"],
            "--val-split", "val", "--backbone-weights", s["weights"], "--out-dir", str(inputs.run_dir),
            "--ood-manifest", s["ood_list"], "--ood-image-root", s["pool"],
            "--batch-size", str(BATCH), "--ood-batch-size", str(OOD_BATCH),
            "--num-centers", str(CENTERS), "--epochs", "1", "--num-workers", "0", "--log-every", "1",
            "--lr", str(SMOKE_LR),
        ]),
        ("cam, 4 scales + flips, 2 images", [
            "cam", "--checkpoint", str(inputs.run_dir / "model.pt"), "--voc-root", s["voc_root"],
            "--split", "val", "--out", str(inputs.cam_dir), "--num-workers", "0",
        ]),
        ("evaluate", [
            "evaluate", "--cam-dir", str(inputs.cam_dir), "--voc-root", s["voc_root"],
            "--split", "val",
        ]),
        ("mine voc12, 20 pool images", [
            "mine", "--preset", "voc12", "--db", str(inputs.db),
            "--checkpoint", str(inputs.run_dir / "model.pt"), "--pool", s["pool"],
        ]),
    ]  # fmt: skip


def check_outputs(inputs: SmokeInputs) -> dict:
    """Assert what the smoke must show; returns the facts the bench prints."""
    checkpoint = read_checkpoint(inputs.run_dir / "model.pt")
    assert checkpoint["model_args"]["backbone"] == "resnet50", checkpoint["model_args"]
    assert checkpoint["model_args"]["output_stride"] == 16
    assert checkpoint["config"]["crop"] == 512 and checkpoint["config"]["ood_manifest"]
    log = pd.read_csv(inputs.run_dir / "train_log.csv")
    assert list(log["step"]) == [1, 2], log
    terms = [c for c in ("loss", "bce", "l_dist", "l_ood") if c in log]
    assert {"l_dist", "l_ood"} <= set(terms), f"W-OoD terms missing from {list(log.columns)}"
    assert np.isfinite(log[terms].to_numpy()).all(), log[terms]
    shapes = []
    for image_id in read_split(inputs.voc_root, "val"):
        height, width = read_image(image_path(inputs.voc_root, image_id)).shape[:2]
        cam_dict = np.load(inputs.cam_dir / f"{image_id}.npy", allow_pickle=True).item()
        keys, high_res, cam = cam_dict["keys"], cam_dict["high_res"], cam_dict["cam"]
        assert high_res.shape == (len(keys), height, width), (high_res.shape, height, width)
        assert isinstance(cam, torch.Tensor)
        assert tuple(cam.shape) == (len(keys), (height - 1) // 4 + 1, (width - 1) // 4 + 1)
        assert np.isfinite(high_res).all() and torch.isfinite(cam).all()
        shapes.append(f"{height}x{width}: high_res {high_res.shape}, cam {tuple(cam.shape)}")
    assert (inputs.cam_dir / "eval.json").is_file()
    with store.connect(inputs.db) as conn:
        scored = conn.execute("SELECT COUNT(DISTINCT sha256) FROM scores").fetchone()[0]
        images = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert images == 20 and scored == images, (images, scored)
    return {
        "losses": {t: [float(v) for v in log[t]] for t in terms},
        "cam_shapes": shapes,
        "pool_scored": scored,
    }


_STAGE = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from app.cli import main
from benches.peak_memory import peak_rss_mb
code = main(sys.argv[1:])
Path({report!r}).write_text(str(peak_rss_mb()))
sys.exit(code)
"""


def _run_stage(argv: list[str]) -> tuple[float, float, int]:
    """One ``hardood`` command in its own process: (seconds, peak RSS in MB, exit code)."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rss"
        code = _STAGE.format(repo=str(repo), report=str(report))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, *argv], cwd=repo)
        seconds = time.perf_counter() - start
        rss = float(report.read_text()) if report.is_file() else float("nan")
    return seconds, rss, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, help="keep the files here (default: a temp dir)")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="voc12_smoke_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HARDOOD_QUIET", "1")
    start = time.perf_counter()
    inputs = prepare(work)
    rows = [("world at VOC size + BN calibration", time.perf_counter() - start, math.nan, 0)]
    for stage, argv in commands(inputs):
        print("$ hardood " + shlex.join(argv), flush=True)
        seconds, rss, code = _run_stage(argv)
        rows.append((stage, seconds, rss, code))
        if code:
            print(f"{stage}: exit code {code}")
            return code
    facts = check_outputs(inputs)
    print(f"\nvoc12 smoke on {os.cpu_count()} cores, torch {torch.__version__}, in {work}")
    print("| stage | seconds | peak RSS (MB) |\n|---|---|---|")
    for stage, seconds, rss, _ in rows:
        print(f"| {stage} | {seconds:.1f} | {'-' if math.isnan(rss) else f'{rss:.0f}'} |")
    print("losses per step: " + "; ".join(f"{k} {v}" for k, v in facts["losses"].items()))
    print("CAM shapes: " + "; ".join(facts["cam_shapes"]))
    print(f"pool images scored: {facts['pool_scored']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
