"""Settings of ``hardood demo`` (importable without torch, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wood_train.config import config_field


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``hardood demo``; ``tiny`` shrinks every step for a quick end-to-end check."""

    out: Path = config_field(Path("demo_workspace"), "workspace folder for every artefact")
    manifest_dir: Path = config_field(
        Path("data_manifests/demo-world"), "where the exported manifest goes"
    )
    world_preset: str = config_field("default", "spurious-cue world preset: default | tiny")
    baseline_epochs: int = config_field(6, "baseline training epochs")
    wood_epochs: int = config_field(2, "W-OoD training epochs (from the baseline weights)")
    queue_size: int = config_field(400, "review queue length")
    error_rate: float = config_field(0.03, "simulated annotators: probability a verdict is wrong")
    seconds_per_verdict: float = config_field(
        1.1, "simulated annotators: median seconds per verdict"
    )
    cam_scales: tuple[float, ...] = config_field(
        (1.0, 0.5, 1.5, 2.0), "CAM inference scales (each with flip)"
    )
    eval_split: str = config_field(
        "train", "split the CAM seeds are evaluated on (VOC standard: train)"
    )
    num_centers: int = config_field(20, "K-means centres of the hard-OoD features")
    wood_lr: float = config_field(
        0.002, "W-OoD learning rate (continues from the baseline, so lower than its 0.01)"
    )
    seed: int = config_field(0, "seed of training and the simulated annotators")
    tiny: bool = config_field(False, "tiny world and few steps (the end-to-end test)")
