"""What shapes a world: ``WorldConfig``, its presets, and the paths of a written world."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wood_train.config import config_field
from wood_train.errors import ConfigError
from wood_train.world.draw import CLASS_NAMES, CUE_NAMES

# bump when drawing changes, so an old world on disk is not mistaken for the current one
GENERATOR_VERSION = 4
POOL_KINDS = ("hard_ood", "easy_ood", "contaminated")
TRUTH_COLUMNS = ("file", "kind", "cues", "objects", "duplicate_of", "transform")


@dataclass(frozen=True)
class WorldConfig:
    """Everything that shapes a world; the same config always writes the same files."""

    seed: int = config_field(0, "seed of every random choice")
    image_size: int = config_field(64, "image side in pixels (square images)")
    num_classes: int = config_field(
        6, f"foreground classes, the first C of {', '.join(CLASS_NAMES)}"
    )
    p_cue: float = config_field(0.9, "probability that an object's context cue is drawn with it")
    p_two_objects: float = config_field(
        0.2, "probability of two classes (or two cues) in one image"
    )
    p_background: float = config_field(
        0.15, "share of train/val images that hold no class (clutter and ground only)"
    )
    p_ground: float = config_field(
        0.8, "probability of a ground band where the bottom of a scene holds no cue"
    )
    n_train: int = config_field(800, "training images")
    n_val: int = config_field(200, "validation images")
    n_pool_hard: int = config_field(150, "pool: hard OoDs (one or two cues, no object)")
    n_pool_easy: int = config_field(
        720, "pool: easy OoDs (clutter, ground and distractor textures only)"
    )
    n_pool_contaminated: int = config_field(
        230, "pool: images with objects (small ones, as untagged objects tend to be)"
    )
    n_pool_duplicates: int = config_field(100, "pool: extra near-duplicates of other pool images")
    object_size: tuple[float, float] = config_field(
        (0.35, 0.5), "object width range, fraction of side"
    )
    contaminated_object_size: tuple[float, float] = config_field(
        (0.2, 0.35), "object width range in contaminated pool images"
    )
    cue_extent: tuple[float, float] = config_field(
        (0.3, 0.5), "cue band height range, fraction of side"
    )
    hard_cue_extent: tuple[float, float] = config_field(
        (0.1, 0.5), "cue band height range in hard OoDs: a strip of rails or a whole field"
    )
    pixel_noise: float = config_field(0.03, "std of Gaussian pixel noise (intensities in [0, 1])")
    brightness_jitter: float = config_field(0.15, "brightness scaled by 1 +- this, per image")
    jpeg_quality: int = config_field(95, "JPEG quality of written images")

    def __post_init__(self):
        problems = []
        if not 1 <= self.num_classes <= len(CLASS_NAMES):
            problems.append(f"num_classes must be 1..{len(CLASS_NAMES)}, got {self.num_classes}")
        if self.image_size < 24:
            problems.append(f"image_size must be at least 24, got {self.image_size}")
        for name in ("p_cue", "p_two_objects", "p_background", "p_ground"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("n_train", "n_val"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_pool_hard", "n_pool_easy", "n_pool_contaminated", "n_pool_duplicates"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)}")
        if self.n_pool_duplicates and not self.n_pool_originals:
            problems.append("n_pool_duplicates needs at least one other pool image to copy")
        for name in ("object_size", "contaminated_object_size", "cue_extent", "hard_cue_extent"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1] <= 1.0:
                problems.append(f"{name} must be two fractions 0 < lo <= hi <= 1, got {lo_hi}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if problems:
            raise ConfigError("invalid WorldConfig: " + "; ".join(problems))

    @property
    def n_pool_originals(self) -> int:
        return self.n_pool_hard + self.n_pool_easy + self.n_pool_contaminated

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES[: self.num_classes])

    @property
    def cue_names(self) -> list[str]:
        return list(CUE_NAMES[: self.num_classes])


WORLD_PRESETS = {
    "default": WorldConfig(),
    # tests only: four classes and a pool with every kind, small enough for seconds-long runs
    "tiny": WorldConfig(
        image_size=32,
        num_classes=4,
        n_train=24,
        n_val=12,
        n_pool_hard=12,
        n_pool_easy=16,
        n_pool_contaminated=6,
        n_pool_duplicates=6,
    ),
}


@dataclass(frozen=True)
class WorldPaths:
    root: Path
    voc_root: Path
    pool_dir: Path
    truth_csv: Path


def world_paths(root: str | Path) -> WorldPaths:
    root = Path(root)
    return WorldPaths(root, root / "VOC2012", root / "pool", root / "truth" / "pool_truth.csv")
