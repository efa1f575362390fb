"""What the training benches share: the default world of one seed, its baseline, CAMs on ``val``.

``benches/label_efficiency.py`` and ``benches/ablation.py`` both report on the default world's
held-out ``val`` split, W-OoD trained from one baseline checkpoint.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wood_train import config as cfg  # noqa: E402
from wood_train.cam.config import CamConfig  # noqa: E402
from wood_train.cam.evaluate import evaluate_cams  # noqa: E402
from wood_train.cam.make import make_cams  # noqa: E402
from wood_train.train import train  # noqa: E402
from wood_train.train_config import PRESETS  # noqa: E402
from wood_train.world.config import WORLD_PRESETS  # noqa: E402
from wood_train.world.generate import generate_world, world_hash  # noqa: E402


def world_and_baseline(workspace: Path, world_seed: int, baseline: Path | None):
    """(ws, world, base_cfg, baseline checkpoint): the default world of ``world_seed`` in its own
    folder under ``workspace``, and ``baseline`` or a ``--preset world`` baseline trained there."""
    world_config = cfg.replace(WORLD_PRESETS["default"], seed=world_seed)
    # one folder per world (config and generator version): a changed world never meets stale runs
    ws = workspace / f"world-seed{world_seed}-{world_hash(world_config)}"
    ws.mkdir(parents=True, exist_ok=True)
    started = time.time()
    world = generate_world(world_config, ws / "world")
    base_cfg = cfg.replace(PRESETS["world"], voc_root=world.voc_root, val_split=None,
                           out_dir=ws / "baseline")  # fmt: skip
    baseline = baseline or train(base_cfg).checkpoint
    print(f"baseline: {baseline} ({time.time() - started:.0f} s so far)")
    return ws, world, base_cfg, Path(baseline)


def evaluate_on_val(checkpoint: Path, world, cam_dir: Path, scales) -> dict:
    """CAM mIoU and spurious-activation rate of ``checkpoint`` on all of ``val`` (flips included)."""
    make_cams(CamConfig(checkpoint=checkpoint, voc_root=world.voc_root, split="val",
                        out_dir=cam_dir, scales=tuple(scales), num_workers=0))  # fmt: skip
    result = evaluate_cams(cam_dir, world.voc_root, "val")
    return {"miou": result.miou, "spurious": result.spurious_activation_rate}
