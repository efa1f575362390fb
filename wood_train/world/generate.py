"""The spurious-cue world: the project's embedded dataset, written in the VOC 2012 layout.

Writes a world (layout in ``wood_train.world``) and runs ``hardood world``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from wood_train.config import (
    config_hash,
    save_config,
)
from wood_train.data.imageio import decode_image, write_label_png
from wood_train.errors import DataError, MissingInputError, OutputExistsError
from wood_train.progress import progress
from wood_train.world.config import (
    GENERATOR_VERSION,
    POOL_KINDS,
    TRUTH_COLUMNS,
    WorldConfig,
    WorldPaths,
    world_paths,
)
from wood_train.world.scenes import (
    DUPLICATE_CODE,
    DUPLICATE_PICK_CODE,
    class_list,
    encode_jpeg,
    near_duplicate,
    pool_file_names,
    render_sample,
)

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
        world_hash=world_hash(config),
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
    names = iter(pool_file_names(config, config.n_pool_originals + config.n_pool_duplicates))
    rows: list[dict[str, str]] = []
    originals: list[np.ndarray] = []  # decoded as written, the source of near-duplicates
    for kind, count in zip(POOL_KINDS, _pool_counts(config)):
        for index in range(count):
            scene = render_sample(config, kind, index)
            name, data = next(names), encode_jpeg(scene.image, config.jpeg_quality)
            (pool_dir / name).write_bytes(data)
            originals.append(decode_image(data, name))
            cues, objects = class_list(scene.cues), class_list(scene.objects)
            rows.append(
                dict(
                    file=name, kind=kind, cues=cues, objects=objects, duplicate_of="", transform=""
                )
            )
            bar.update(1)
    picks = np.random.default_rng([config.seed, DUPLICATE_PICK_CODE]).choice(
        len(originals), config.n_pool_duplicates, replace=config.n_pool_duplicates > len(originals)
    )
    for index, original in enumerate(picks):
        rng = np.random.default_rng([config.seed, DUPLICATE_CODE, index])
        data, transform = near_duplicate(originals[original], rng, config.jpeg_quality)
        name = next(names)
        (pool_dir / name).write_bytes(data)
        source = rows[original]
        rows.append(dict(source, file=name, duplicate_of=source["file"], transform=transform))
        bar.update(1)
    return pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)).sort_values("file", ignore_index=True)


def _pool_counts(config: WorldConfig) -> tuple[int, int, int]:
    return config.n_pool_hard, config.n_pool_easy, config.n_pool_contaminated


def world_hash(config: WorldConfig) -> str:
    """What identifies a world: its config's hash and the generator version that draws it."""
    return f"{config_hash(config)}-v{GENERATOR_VERSION}"


def read_world_info(root: str | Path) -> dict:
    """The contents of ``world.yaml`` (config, provenance, names, counts)."""
    path = Path(root) / "world.yaml"
    if not path.is_file():
        raise MissingInputError(
            f"{path}: no world here; create one with `hardood world --out {root}`"
        )
    with open(path) as f:
        info = yaml.safe_load(f)
    if not isinstance(info, dict) or "world_hash" not in info:
        raise DataError(f"{path}: not a world description (no world_hash); regenerate with --force")
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
    return world_paths(out_dir) if _existing_world_hash(out_dir) == world_hash(config) else None


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
        raise OutputExistsError(f"{out_dir}: exists and is not a folder; choose another --out")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / "world.yaml").is_file():
        raise OutputExistsError(
            f"{out_dir}: folder is not empty and holds no world; choose a new or empty folder"
        )
    if not force:
        held = _existing_world_hash(out_dir) or "an incomplete world"
        raise OutputExistsError(
            f"{out_dir}: holds a different world ({held}, wanted {world_hash(config)}); "
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
