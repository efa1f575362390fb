"""What each stream of the world draws, image by image, and the pool's near-duplicates."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from wood_train.world.config import WorldConfig
from wood_train.world.draw import CLASS_NAMES, Scene, SceneStyle, Slot, draw_scene

# fixed codes seed each stream's generators; never reorder (that would change every world)
STREAM_CODES = {"train": 1, "val": 2, "hard_ood": 3, "easy_ood": 4, "contaminated": 5}
DUPLICATE_CODE, DUPLICATE_PICK_CODE, POOL_NAME_CODE = 6, 7, 8


def render_sample(config: WorldConfig, stream: str, index: int) -> Scene:
    """Draw image ``index`` of a stream ("train", "val", "hard_ood", "easy_ood", "contaminated").

    The scene holds the image, class mask, cue mask and the objects and cues drawn; the pool's
    cue masks are never written, so this is how a check sees where a hard OoD's cue lies.
    """
    if stream not in STREAM_CODES:
        raise ValueError(f"unknown world stream {stream!r}; choose one of {sorted(STREAM_CODES)}")
    rng = np.random.default_rng([config.seed, STREAM_CODES[stream], index])
    slots: list[Slot] = []
    background_only = stream == "easy_ood" or (
        stream in ("train", "val") and rng.random() < config.p_background
    )
    if not background_only:
        two = config.num_classes >= 2 and rng.random() < config.p_two_objects
        classes = rng.choice(config.num_classes, 2 if two else 1, replace=False)
        for k in classes:
            if stream == "hard_ood":
                slots.append(Slot(int(k), with_object=False, with_cue=True))
            else:
                slots.append(
                    Slot(int(k), with_object=True, with_cue=bool(rng.random() < config.p_cue))
                )
    object_size = (
        config.contaminated_object_size if stream == "contaminated" else config.object_size
    )
    cue_extent = config.hard_cue_extent if stream == "hard_ood" else config.cue_extent
    style = SceneStyle(
        object_size,
        cue_extent,
        config.pixel_noise,
        config.brightness_jitter,
        config.p_ground,
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


def class_list(indices) -> str:
    return ";".join(CLASS_NAMES[k] for k in indices)


def pool_file_names(config: WorldConfig, count: int) -> list[str]:
    """Random hex names: the order of the folder says nothing about kind or generation order."""
    rng = np.random.default_rng([config.seed, POOL_NAME_CODE])
    names: list[str] = []
    taken: set[str] = set()
    while len(names) < count:
        name = f"p_{int(rng.integers(0, 2**32)):08x}.jpg"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names
