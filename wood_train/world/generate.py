"""The spurious-cue world: the project's embedded dataset, written in the VOC 2012 layout.

Each foreground class has an object and a large context cue it stands on (train on rails, boat on
water, aeroplane in sky, sheep on grass, car on road, bird in foliage). In train/val a cue never
appears without its object, so a classifier trained on image labels learns the cue and its CAMs
spill onto it. The unlabelled pool holds what curation must sort out: hard OoDs (cues, no object),
easy OoDs (clutter only), contamination (images with objects) and near-duplicates::

    OUT/world.yaml                            resolved config, provenance, names, counts
    OUT/VOC2012/JPEGImages/<id>.jpg           ids "w_000000", ...
    OUT/VOC2012/SegmentationClass/<id>.png    0 background, c = class c, 255 object edge
    OUT/VOC2012/CueMasks/<id>.png             0 no cue, c = cue of class c
    OUT/VOC2012/ImageSets/Segmentation/{train,val}.txt
    OUT/VOC2012/{class_names,cue_names}.txt, cls_labels.npy
    OUT/pool/p_<hex>.jpg                      unlabelled pool; names leak nothing
    OUT/truth/pool_truth.csv                  file, kind, cues, objects, duplicate_of, transform

``generate_world`` is deterministic: each image draws from its own generator seeded by
(seed, stream, index), so every file except world.yaml's provenance is byte-identical across runs.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from wood_train.config import (
    add_config_args,
    config_hash,
    overrides_from_args,
    replace,
    save_config,
)
from wood_train.data.imageio import decode_image, write_label_png
from wood_train.progress import progress
from wood_train.world.draw import CLASS_NAMES, CUE_NAMES, Scene, SceneStyle, Slot, draw_scene

# bump when drawing changes, so an old world on disk is not mistaken for the current one
GENERATOR_VERSION = 1
POOL_KINDS = ("hard_ood", "easy_ood", "contaminated")
TRUTH_COLUMNS = ("file", "kind", "cues", "objects", "duplicate_of", "transform")
# fixed codes seed each stream's generators; never reorder (that would change every world)
_STREAM_CODES = {"train": 1, "val": 2, "hard_ood": 3, "easy_ood": 4, "contaminated": 5}
_DUPLICATE_CODE, _DUPLICATE_PICK_CODE, _POOL_NAME_CODE = 6, 7, 8


def _help(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class WorldConfig:
    """Everything that shapes a world; the same config always writes the same files."""

    seed: int = _help(0, "seed of every random choice")
    image_size: int = _help(64, "image side in pixels (square images)")
    num_classes: int = _help(4, f"foreground classes, the first C of {', '.join(CLASS_NAMES)}")
    p_cue: float = _help(0.9, "probability that an object's context cue is drawn with it")
    p_two_objects: float = _help(0.2, "probability of two classes (or two cues) in one image")
    n_train: int = _help(800, "training images")
    n_val: int = _help(200, "validation images")
    n_pool_hard: int = _help(300, "pool: hard OoDs (one or two cues, no object)")
    n_pool_easy: int = _help(600, "pool: easy OoDs (clutter and distractor textures only)")
    n_pool_contaminated: int = _help(200, "pool: images drawn like training images (with objects)")
    n_pool_duplicates: int = _help(100, "pool: extra near-duplicates of other pool images")
    object_size: tuple[float, float] = _help((0.35, 0.5), "object width range, fraction of side")
    cue_extent: tuple[float, float] = _help((0.3, 0.5), "cue band height range, fraction of side")
    pixel_noise: float = _help(0.03, "std of Gaussian pixel noise (intensities in [0, 1])")
    brightness_jitter: float = _help(0.15, "brightness scaled by 1 +- this, per image")
    jpeg_quality: int = _help(95, "JPEG quality of written images")

    def __post_init__(self):
        problems = []
        if not 1 <= self.num_classes <= len(CLASS_NAMES):
            problems.append(f"num_classes must be 1..{len(CLASS_NAMES)}, got {self.num_classes}")
        if self.image_size < 24:
            problems.append(f"image_size must be at least 24, got {self.image_size}")
        for name in ("p_cue", "p_two_objects"):
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
        for name in ("object_size", "cue_extent"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 0.0 < lo_hi[0] <= lo_hi[1] <= 1.0:
                problems.append(f"{name} must be two fractions 0 < lo <= hi <= 1, got {lo_hi}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if problems:
            raise ValueError("invalid WorldConfig: " + "; ".join(problems))

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
    "tiny": WorldConfig(
        image_size=32,
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


# ---- one image ----------------------------------------------------------------------------------


def render_sample(config: WorldConfig, stream: str, index: int) -> Scene:
    """Draw image ``index`` of a stream ("train", "val", "hard_ood", "easy_ood", "contaminated").

    The scene holds the image, class mask, cue mask and the objects and cues drawn; the pool's
    cue masks are never written, so this is how a check sees where a hard OoD's cue lies.
    """
    if stream not in _STREAM_CODES:
        raise ValueError(f"unknown world stream {stream!r}; choose one of {sorted(_STREAM_CODES)}")
    rng = np.random.default_rng([config.seed, _STREAM_CODES[stream], index])
    slots: list[Slot] = []
    if stream != "easy_ood":
        two = config.num_classes >= 2 and rng.random() < config.p_two_objects
        classes = rng.choice(config.num_classes, 2 if two else 1, replace=False)
        for k in classes:
            if stream == "hard_ood":
                slots.append(Slot(int(k), with_object=False, with_cue=True))
            else:
                slots.append(
                    Slot(int(k), with_object=True, with_cue=bool(rng.random() < config.p_cue))
                )
    style = SceneStyle(
        config.object_size, config.cue_extent, config.pixel_noise, config.brightness_jitter
    )
    return draw_scene(rng, config.image_size, slots, style)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    # no chroma subsampling: at 32-64 px it would smear the thin rails and windows
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality), subsampling=0)
    return buffer.getvalue()


def near_duplicate(image: np.ndarray, rng: np.random.Generator, quality: int) -> tuple[bytes, str]:
    """One transform of a pool image: JPEG re-encode, resize by 0.8-1.25x, or a 3-8% crop."""
    kind = int(rng.integers(3))
    height, width = image.shape[:2]
    if kind == 0:
        q = int(rng.integers(60, 86))
        return encode_jpeg(image, q), f"jpeg q={q}"
    if kind == 1:
        factor = float(rng.uniform(0.8, 1.25))
        side = round(width * factor)
        if side == width:  # a factor near 1 must still change the size
            side += 1 if factor >= 1 else -1
        resized = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
        return encode_jpeg(resized, quality), f"resize x{side / width:.2f}"
    fraction = float(rng.uniform(0.03, 0.08))
    cut = max(1, round(fraction * width))
    top, left = int(rng.integers(0, cut + 1)), int(rng.integers(0, cut + 1))
    cropped = image[top : top + height - cut, left : left + width - cut]
    return encode_jpeg(np.ascontiguousarray(cropped), quality), f"crop {cut / width:.0%}"


def _names(indices) -> str:
    return ";".join(CLASS_NAMES[k] for k in indices)


def _pool_file_names(config: WorldConfig, count: int) -> list[str]:
    """Random hex names: the order of the folder says nothing about kind or generation order."""
    rng = np.random.default_rng([config.seed, _POOL_NAME_CODE])
    names: list[str] = []
    taken: set[str] = set()
    while len(names) < count:
        name = f"p_{int(rng.integers(0, 2**32)):08x}.jpg"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


# ---- writing a world ----------------------------------------------------------------------------


def _write_world(config: WorldConfig, root: Path) -> None:
    paths = world_paths(root)
    total = config.n_train + config.n_val + config.n_pool_originals + config.n_pool_duplicates
    with progress(total=total, desc="world", unit="img") as bar:
        _write_splits(config, paths.voc_root, bar)
        truth = _write_pool(config, paths.pool_dir, bar)
    paths.truth_csv.parent.mkdir()
    truth.to_csv(paths.truth_csv, index=False)
    counts = {
        "train": config.n_train,
        "val": config.n_val,
        "pool": len(truth),
        "pool_kinds": {kind: int((truth["kind"] == kind).sum()) for kind in POOL_KINDS},
        "pool_duplicates": config.n_pool_duplicates,
    }
    # written last: its presence marks a complete world
    save_config(
        config,
        root / "world.yaml",
        world_hash=_world_hash(config),
        class_names=config.class_names,
        cue_names=config.cue_names,
        counts=counts,
    )


def _write_splits(config: WorldConfig, voc: Path, bar) -> None:
    """Images, class masks, cue masks, split lists, names and IRN's cls_labels.npy."""
    for folder in ("JPEGImages", "SegmentationClass", "CueMasks", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    labels: dict[str, np.ndarray] = {}
    first_id = {"train": 0, "val": config.n_train}
    for split, count in (("train", config.n_train), ("val", config.n_val)):
        ids = [f"w_{first_id[split] + i:06d}" for i in range(count)]
        for index, image_id in enumerate(ids):
            scene = render_sample(config, split, index)
            jpeg = encode_jpeg(scene.image, config.jpeg_quality)
            (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
            write_label_png(scene.class_mask, voc / "SegmentationClass" / f"{image_id}.png")
            write_label_png(scene.cue_mask, voc / "CueMasks" / f"{image_id}.png")
            labels[image_id] = np.zeros(config.num_classes, np.float32)
            labels[image_id][list(scene.objects)] = 1.0
            bar.update(1)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (voc / "class_names.txt").write_text("\n".join(config.class_names) + "\n")
    (voc / "cue_names.txt").write_text("\n".join(config.cue_names) + "\n")
    with open(voc / "cls_labels.npy", "wb") as f:
        np.save(f, labels, allow_pickle=True)


def _write_pool(config: WorldConfig, pool_dir: Path, bar) -> pd.DataFrame:
    """The unlabelled pool under random names; returns its truth table, sorted by file name."""
    pool_dir.mkdir()
    names = iter(_pool_file_names(config, config.n_pool_originals + config.n_pool_duplicates))
    rows: list[dict[str, str]] = []
    originals: list[np.ndarray] = []  # decoded as written, the source of near-duplicates
    for kind, count in zip(POOL_KINDS, _pool_counts(config)):
        for index in range(count):
            scene = render_sample(config, kind, index)
            name, data = next(names), encode_jpeg(scene.image, config.jpeg_quality)
            (pool_dir / name).write_bytes(data)
            originals.append(decode_image(data, name))
            cues, objects = _names(scene.cues), _names(scene.objects)
            rows.append(
                dict(
                    file=name, kind=kind, cues=cues, objects=objects, duplicate_of="", transform=""
                )
            )
            bar.update(1)
    picks = np.random.default_rng([config.seed, _DUPLICATE_PICK_CODE]).choice(
        len(originals), config.n_pool_duplicates, replace=config.n_pool_duplicates > len(originals)
    )
    for index, original in enumerate(picks):
        rng = np.random.default_rng([config.seed, _DUPLICATE_CODE, index])
        data, transform = near_duplicate(originals[original], rng, config.jpeg_quality)
        name = next(names)
        (pool_dir / name).write_bytes(data)
        source = rows[original]
        rows.append(dict(source, file=name, duplicate_of=source["file"], transform=transform))
        bar.update(1)
    return pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)).sort_values("file", ignore_index=True)


def _pool_counts(config: WorldConfig) -> tuple[int, int, int]:
    return config.n_pool_hard, config.n_pool_easy, config.n_pool_contaminated


def _world_hash(config: WorldConfig) -> str:
    return f"{config_hash(config)}-v{GENERATOR_VERSION}"


def read_world_info(root: str | Path) -> dict:
    """The contents of ``world.yaml`` (config, provenance, names, counts)."""
    path = Path(root) / "world.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no world here; create one with `hardood world --out {root}`"
        )
    with open(path) as f:
        info = yaml.safe_load(f)
    if not isinstance(info, dict) or "world_hash" not in info:
        raise ValueError(
            f"{path}: not a world description (no world_hash); regenerate with --force"
        )
    return info


def _existing_world_hash(root: Path) -> str | None:
    """The world hash of a complete world in ``root``, or None when there is none."""
    paths = world_paths(root)
    needed = (root / "world.yaml", paths.truth_csv, paths.voc_root / "cls_labels.npy")
    if not all(p.is_file() for p in needed):
        return None
    try:
        return str(read_world_info(root)["world_hash"])
    except (ValueError, yaml.YAMLError):
        return None


def find_world(out_dir: str | Path, config: WorldConfig) -> WorldPaths | None:
    """The paths of the world ``config`` describes if ``out_dir`` already holds it complete."""
    out_dir = Path(out_dir)
    return world_paths(out_dir) if _existing_world_hash(out_dir) == _world_hash(config) else None


def generate_world(config: WorldConfig, out_dir: str | Path, force: bool = False) -> WorldPaths:
    """Write the world ``config`` describes to ``out_dir`` (layout in the module docstring).

    Parameters
    ----------
    config : WorldConfig
        What to draw; ``WORLD_PRESETS["default"]`` or ``["tiny"]`` are the usual starting points.
    out_dir : path
        The world folder. Re-running with the same config returns the existing world at once.
    force : bool
        Replace a different world already in ``out_dir`` (otherwise that raises ValueError).
        A non-empty folder that holds no world is never touched, even with ``force``.

    Returns
    -------
    WorldPaths
        The world's root, VOC root, pool folder and truth CSV.

    The world is built in a hidden sibling folder and renamed into place, so ``out_dir`` never
    holds half a world. Example::

        paths = generate_world(WORLD_PRESETS["tiny"], "runs/world")
        ids = wood_train.data.voc.read_split(paths.voc_root, "train")
    """
    out_dir = Path(out_dir)
    found = find_world(out_dir, config)
    if found is not None:
        return found
    _check_replaceable(out_dir, config, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        partial.mkdir()
        _write_world(config, partial)
        _install(partial, out_dir, config, force)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return world_paths(out_dir)


def _check_replaceable(out_dir: Path, config: WorldConfig, force: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a folder; choose another --out")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / "world.yaml").is_file():
        raise ValueError(
            f"{out_dir}: folder is not empty and holds no world; choose a new or empty folder"
        )
    if not force:
        held = _existing_world_hash(out_dir) or "an incomplete world"
        raise ValueError(
            f"{out_dir}: holds a different world ({held}, wanted {_world_hash(config)}); "
            "pass --force (force=True) to replace it, or choose another folder"
        )


def _install(partial: Path, out_dir: Path, config: WorldConfig, force: bool) -> None:
    """Rename the finished world into place; if another run installed the same world first, keep it."""
    retired = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
    if force and out_dir.is_dir() and any(out_dir.iterdir()):
        out_dir.rename(retired)
    try:
        partial.rename(out_dir)  # also replaces an empty folder
    except OSError:
        if find_world(out_dir, config) is None:
            if retired.exists() and not out_dir.exists():
                retired.rename(out_dir)  # put the old world back rather than lose it
            raise
    shutil.rmtree(retired, ignore_errors=True)


def read_pool_truth(world_root: str | Path) -> pd.DataFrame:
    """The pool's ground truth (one row per pool file). Evaluation only: mining never reads it."""
    path = world_paths(world_root).truth_csv
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pool truth not found; is {world_root} a world folder?")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in TRUTH_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return table


# ---- command line -------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "world",
        help="generate the spurious-cue world (VOC layout, unlabelled pool, pool truth)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", type=Path, required=True, help="world folder to write")
    parser.add_argument(
        "--preset", choices=sorted(WORLD_PRESETS), default="default", help="base config"
    )
    parser.add_argument("--force", action="store_true", help="replace a different world in --out")
    add_config_args(parser, WorldConfig)
    parser.set_defaults(func=run_from_args)
    return parser


def config_from_args(args: argparse.Namespace) -> WorldConfig:
    return replace(WORLD_PRESETS[args.preset], **overrides_from_args(args, WorldConfig))


def run_from_args(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    start = time.perf_counter()
    reused = find_world(args.out, config) is not None
    paths = generate_world(config, args.out, force=args.force)
    counts = read_world_info(paths.root)["counts"]
    kinds = ", ".join(f"{kind} {n}" for kind, n in counts["pool_kinds"].items())
    print(
        f"world {'reused' if reused else 'written'}: train {counts['train']}, val {counts['val']}, "
        f"pool {counts['pool']} ({kinds}; {counts['pool_duplicates']} of them near-duplicates) "
        f"in {time.perf_counter() - start:.1f} s -> {paths.root}"
    )
    return 0
