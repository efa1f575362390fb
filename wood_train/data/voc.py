"""PASCAL VOC 2012 layout: class names, split lists, image paths and image-level labels.

``VOC_ROOT`` is the extracted ``VOCdevkit/VOC2012`` folder. The spurious-cue world is written in
the same layout, so the same functions read both::

    VOC_ROOT/JPEGImages/<id>.jpg           (or .png)
    VOC_ROOT/SegmentationClass/<id>.png    (VOC's palette PNGs: 0 background, c = class c,
                                            255 on object borders and "difficult" regions)
    VOC_ROOT/SegmentationClassAug/<id>.png (optional: the SBD-augmented masks of train_aug + val,
                                            usually grayscale, mostly without borders)
    VOC_ROOT/ImageSets/Segmentation/<split>.txt  (train, val, trainval; add IRN's train_aug.txt)
    VOC_ROOT/class_names.txt               (optional; the 20 VOC names otherwise)
    VOC_ROOT/cls_labels.npy                (optional; IRN's {id: C-vector} dict, ids as ints)
    VOC_ROOT/CueMasks/<id>.png             (world only: 0 none, c = cue of class c)

Which mask folder a run reads is a choice (``--masks``): with only one present it is that one;
when both are present the user names one, and the run's config records it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wood_train.data.imageio import read_label_png
from wood_train.errors import ConfigError, DataError, MissingInputError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_FILE = "cls_labels.npy"  # IRN's image-level labels
MASK_FOLDERS = ("SegmentationClass", "SegmentationClassAug")
MASK_CHOICES = ("auto", *MASK_FOLDERS)


def read_class_names(voc_root: str | Path) -> list[str]:
    """Foreground class names in label order (index 0 is class 1 in the masks)."""
    path = Path(voc_root) / "class_names.txt"
    if not path.is_file():
        return list(VOC_CLASSES)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names repeat: {names}")
    return names


VOC_ROOT_PARTS = ("JPEGImages", "ImageSets/Segmentation")


def check_voc_root(
    voc_root: str | Path, flag: str = "--voc-root", parts: tuple[str, ...] = VOC_ROOT_PARTS
) -> Path:
    """Refuse a folder without ``parts`` (a VOC-layout root's images and split lists); name the
    root inside it when there is one.

    ``runs/world`` (the world's folder) holds the root ``runs/world/VOC2012``: a user who passes
    the parent gets told so, instead of an error about class counts or missing files later.
    """
    root = Path(voc_root)
    if not root.is_dir():
        raise MissingInputError(f"{flag} {root}: folder not found")
    missing = [part for part in parts if not (root / part).is_dir()]
    if missing:
        inside = sorted(str(c) for c in root.iterdir() if all((c / p).is_dir() for p in parts))
        hint = f"; did you mean {flag} {inside[0]}?" if inside else ""
        raise MissingInputError(
            f"{flag} {root} is not a VOC root (no {' or '.join(f'{m}/' for m in missing)} "
            f"inside){hint}"
        )
    return root


def split_names(voc_root: str | Path) -> list[str]:
    """The split lists a VOC root offers (``ImageSets/Segmentation/*.txt``)."""
    folder = Path(voc_root) / "ImageSets" / "Segmentation"
    return sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []


def split_path(voc_root: str | Path, split: str) -> Path:
    """The list file of a split: ``ImageSets/Segmentation/<split>.txt``, or ``split`` itself
    when it names an existing ``.txt`` file."""
    candidate = Path(split)
    if candidate.suffix == ".txt" and candidate.is_file():
        return candidate
    return Path(voc_root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def read_split(voc_root: str | Path, split: str) -> list[str]:
    """Image ids of a split: ``ImageSets/Segmentation/<split>.txt`` or a path to a list file."""
    path = split_path(voc_root, split)
    if not path.is_file():
        offered = ", ".join(split_names(voc_root)) or "none"
        raise MissingInputError(f"split list not found: {path} (splits in {voc_root}: {offered})")
    # IRN's train_aug lists may hold "JPEGImages/x.jpg SegmentationClassAug/x.png" pairs
    ids = [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: the split list is empty")
    return ids


def image_path(voc_root: str | Path, image_id: str) -> Path:
    folder = Path(voc_root) / "JPEGImages"
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{image_id}{suffix}"
        if path.is_file():
            return path
    raise MissingInputError(f"no image for id {image_id!r} in {folder} (tried {IMAGE_SUFFIXES})")


def resolve_masks(voc_root: str | Path, choice: str = "auto") -> str:
    """The mask folder a run reads: ``choice`` itself, or for ``auto`` the only one present.

    ``auto`` with no mask folder at all gives ``SegmentationClass`` (labels may still come from
    ``cls_labels.npy``; a mask that is then needed is reported missing). ``auto`` with both
    present refuses: VOC's ``SegmentationClass`` (1,464 train + 1,449 val, with borders) and
    SBD's ``SegmentationClassAug`` (train_aug + val) disagree on some images, so the user picks.
    """
    if choice not in MASK_CHOICES:
        raise ConfigError(f"--masks {choice!r}: choose one of {', '.join(MASK_CHOICES)}")
    root = Path(voc_root)
    present = [name for name in MASK_FOLDERS if (root / name).is_dir()]
    if choice != "auto":
        if choice not in present:
            raise MissingInputError(f"--masks {choice}: no folder {root / choice}")
        return choice
    if len(present) == 2:
        raise ConfigError(
            f"{root} holds both SegmentationClass and SegmentationClassAug; pick the masks with "
            "--masks SegmentationClassAug (SBD's, for train_aug) or --masks SegmentationClass "
            "(VOC's own, the usual choice to evaluate seeds on train)"
        )
    return present[0] if present else MASK_FOLDERS[0]


def mask_path(voc_root: str | Path, image_id: str, folder: str = "SegmentationClass") -> Path:
    """``VOC_ROOT/<folder>/<id>.png``; only that folder, so a run never mixes two mask sets."""
    path = Path(voc_root) / folder / f"{image_id}.png"
    if not path.is_file():
        other = [n for n in MASK_FOLDERS if n != folder and (Path(voc_root) / n).is_dir()]
        hint = f"; {other[0]} is present: pass --masks {other[0]} to use it" if other else ""
        raise MissingInputError(f"no mask for id {image_id!r}: {path} not found{hint}")
    return path


def _labels_from_npy(path: Path, image_ids: list[str], num_classes: int) -> np.ndarray:
    table = np.load(path, allow_pickle=True).item()
    # IRN stores ids as ints (2007_000032 -> 2007000032); the world stores strings
    lookup = {str(k): v for k, v in table.items()}
    rows = []
    for image_id in image_ids:
        key = image_id if image_id in lookup else image_id.replace("_", "")
        if key not in lookup:
            raise DataError(f"{path}: no label for image {image_id!r}")
        row = np.asarray(lookup[key], dtype=np.float32)
        if row.shape != (num_classes,):
            raise DataError(
                f"{path}: label of {image_id!r} has shape {row.shape}, expected ({num_classes},)"
            )
        rows.append(row)
    return np.stack(rows)


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Image-level multi-hot label from a class mask (background 0 and ignore 255 dropped)."""
    present = np.unique(mask)
    present = present[(present > 0) & (present <= num_classes)]
    label = np.zeros(num_classes, dtype=np.float32)
    label[present - 1] = 1.0
    return label


def load_image_labels(
    voc_root: str | Path,
    image_ids: list[str],
    num_classes: int,
    masks: str = "SegmentationClass",
) -> np.ndarray:
    """(N, C) multi-hot labels: from ``cls_labels.npy`` if present, else from the ``masks`` folder."""
    npy = Path(voc_root) / LABEL_FILE
    if npy.is_file():
        return _labels_from_npy(npy, image_ids, num_classes)
    return np.stack(
        [
            labels_from_mask(read_label_png(mask_path(voc_root, i, masks)), num_classes)
            for i in image_ids
        ]
    )
