"""Settings of the ``cam`` and ``evaluate`` stages (importable without torch, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wood_train.config import config_field

CAM_SCALES = (1.0, 0.5, 1.5, 2.0)  # WOOD_SPEC section 4 / IRN's make_cam
DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95


@dataclass(frozen=True)
class CamConfig:
    """Settings of the ``cam`` stage."""

    checkpoint: Path | None = config_field(None, "trained CamNet checkpoint")
    voc_root: Path | None = config_field(None, "dataset root in VOC layout")
    split: str = config_field("train", "split name or path to an id list")
    masks: str = config_field(
        "auto",
        "auto (the only mask folder present) | SegmentationClassAug | SegmentationClass; name one when both exist (labels come from cls_labels.npy when present)",
    )
    out_dir: Path | None = config_field(None, "folder for <id>.npy CAM files", flag="--out")
    scales: tuple[float, ...] = config_field(CAM_SCALES, "inference scales, each run with its flip")
    num_workers: int = config_field(2, "DataLoader workers decoding images")
    device: str = config_field("auto", "auto (cuda if available), cpu, cuda")
    amp: bool = config_field(True, "bf16 autocast on CUDA (maps are summed in float32)")
    overlays: bool = config_field(False, "also write PNG overlays")
    overlay_alpha: float = config_field(0.5, "weight of the CAM colour")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of the ``evaluate`` stage."""

    cam_dir: Path | None = config_field(None, "folder of <id>.npy CAMs")
    voc_root: Path | None = config_field(None, "dataset root in VOC layout")
    split: str = config_field("train", "split name or path to an id list")
    masks: str = config_field(
        "auto",
        "auto (the only mask folder present) | SegmentationClassAug | SegmentationClass; name one when both exist",
    )
    thresholds: tuple[float, ...] = config_field(
        DEFAULT_THRESHOLDS, "background thresholds to sweep"
    )
    out: Path | None = config_field(None, "JSON result (default <cam_dir>/eval.json)")
