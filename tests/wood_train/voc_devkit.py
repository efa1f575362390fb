"""A tiny PASCAL VOC 2012 in exactly the on-disk shape a researcher downloads.

``VOCdevkit/VOC2012`` with JPEG images, VOC's palette masks with 255 borders in
``SegmentationClass``, SBD's grayscale masks without borders in ``SegmentationClassAug``, the
``ImageSets/Segmentation`` lists, and IRN's two files: ``train_aug.txt`` (ids one per line, kept in
IRN's ``voc12/`` folder) and ``cls_labels.npy`` (``{int(id without "_"): float32 (20,)}``).
Each image holds planted rectangles of known VOC classes, so every label and mask is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wood_train.data.imageio import write_label_png
from wood_train.data.voc import VOC_CLASSES

BORDER = 255
# id -> (height, width, [(class id 1..20, top, left, bottom, right), ...]); VOC's real id format
OBJECTS = {
    "2007_000032": (72, 96, [(1, 10, 12, 50, 80)]),  # aeroplane
    "2007_000039": (96, 72, [(20, 20, 10, 70, 60)]),  # tvmonitor
    "2007_000063": (72, 96, [(9, 30, 5, 65, 40), (12, 8, 50, 60, 90)]),  # chair, dog
    "2007_000033": (72, 96, [(1, 5, 5, 40, 60), (15, 30, 60, 70, 92)]),  # aeroplane, person
    "2007_000042": (96, 72, [(19, 40, 4, 90, 68)]),  # train
    "2008_000002": (72, 96, [(20, 12, 20, 60, 76)]),  # tvmonitor (SBD only)
    "2008_000003": (72, 96, [(19, 20, 2, 70, 94), (15, 4, 40, 30, 60)]),  # train, person
    "2008_000007": (96, 72, [(1, 10, 10, 50, 62)]),  # aeroplane
}
SPLITS = {
    "train": ["2007_000032", "2007_000039", "2007_000063"],
    "val": ["2007_000033", "2007_000042"],
}
IRN_TRAIN_AUG = [*SPLITS["train"], "2008_000002", "2008_000003", "2008_000007"]


@dataclass(frozen=True)
class VocDevkit:
    voc_root: Path  # VOCdevkit/VOC2012
    irn_train_aug: Path  # IRN's voc12/train_aug.txt


def planted_mask(image_id: str) -> np.ndarray:
    """The class mask without borders (what SBD's masks look like)."""
    height, width, objects = OBJECTS[image_id]
    mask = np.zeros((height, width), np.uint8)
    for cls, top, left, bottom, right in objects:
        mask[top:bottom, left:right] = cls
    return mask


def with_borders(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """VOC's masks: 255 on a band along every object's outline."""
    out = mask.copy()
    edge = np.zeros(mask.shape, bool)
    for dy, dx in ((0, 1), (1, 0)):
        differs = mask[dy:, dx:] != mask[: mask.shape[0] - dy, : mask.shape[1] - dx]
        edge[dy:, dx:] |= differs
        edge[: mask.shape[0] - dy, : mask.shape[1] - dx] |= differs
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    out[edge] = BORDER
    return out


def planted_label(image_id: str) -> np.ndarray:
    label = np.zeros(len(VOC_CLASSES), np.float32)
    for cls, *_ in OBJECTS[image_id][2]:
        label[cls - 1] = 1.0
    return label


def _image(image_id: str) -> np.ndarray:
    height, width, objects = OBJECTS[image_id]
    rng = np.random.default_rng(int(image_id.replace("_", "")))
    image = rng.integers(90, 140, size=(height, width, 3)).astype(np.uint8)
    for cls, top, left, bottom, right in objects:
        colour = np.array([(cls * 53) % 256, (cls * 97) % 256, (cls * 31) % 256], np.uint8)
        image[top:bottom, left:right] = colour
    return image


def write_voc_devkit(root: Path) -> VocDevkit:
    """Write ``root/VOCdevkit/VOC2012`` and IRN's ``root/irn/voc12/train_aug.txt``."""
    voc_root = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug"):
        (voc_root / folder).mkdir(parents=True)
    lists = voc_root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for image_id in OBJECTS:
        Image.fromarray(_image(image_id)).save(voc_root / "JPEGImages" / f"{image_id}.jpg")
    for image_id in [*SPLITS["train"], *SPLITS["val"]]:  # VOC's own: palette, 255 borders
        write_label_png(with_borders(planted_mask(image_id)), voc_root / "SegmentationClass" / f"{image_id}.png")  # fmt: skip
    for image_id in [*IRN_TRAIN_AUG, *SPLITS["val"]]:  # SBD's: grayscale, no borders
        Image.fromarray(planted_mask(image_id), "L").save(
            voc_root / "SegmentationClassAug" / f"{image_id}.png"
        )
    for name, ids in {**SPLITS, "trainval": SPLITS["train"] + SPLITS["val"]}.items():
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    irn = root / "irn" / "voc12"
    irn.mkdir(parents=True)
    (irn / "train_aug.txt").write_text("".join(f"{i}\n" for i in IRN_TRAIN_AUG))
    # IRN's cls_labels.npy: int keys (2007_000032 -> 2007000032), one (20,) float32 row each
    table = {int(i.replace("_", "")): planted_label(i) for i in OBJECTS}
    np.save(voc_root / "cls_labels.npy", table)
    return VocDevkit(voc_root, irn / "train_aug.txt")
