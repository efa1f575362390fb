"""CAM seed quality: mIoU over a background-threshold sweep, and the spurious-activation rate.

WOOD_SPEC section 5 (IRN's eval_cam): for a threshold t, a constant background map t is put in
front of an image's class maps, the argmax gives the seed label (background wins ties, so a pixel
is foreground exactly when its strongest CAM exceeds t), and a confusion matrix over background +
C classes collects all images, pixels labelled 255 ignored. The best t is the one with the highest
mIoU.

The spurious-activation rate measures what W-OoD is meant to fix: over images that have a
``CueMasks/<id>.png`` (the synthetic world marks each class's context cue, e.g. rails), it is the
fraction of cue pixels that are background in the ground truth yet labelled foreground by the seed.
Images are streamed one at a time, so memory does not grow with the split.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wood_train import config as cfg
from wood_train.cam.config import DEFAULT_THRESHOLDS, EvalConfig
from wood_train.cam.make import load_cam
from wood_train.cam.metrics import ThresholdSweepConfusion
from wood_train.data import voc
from wood_train.data.imageio import read_label_png
from wood_train.errors import ConfigError, DataError, MissingInputError
from wood_train.progress import progress

CUE_DIR = "CueMasks"
EVAL_NAME = "eval.json"


@dataclass(frozen=True)
class CamEvaluation:
    """Result of ``evaluate_cams``; IoUs and rates are fractions in [0, 1].

    ``per_class_iou`` maps names (``background`` first) to IoU at the best threshold, NaN for a
    class absent from both seeds and ground truth. ``spurious_activation_rate`` is None when no
    image has a cue mask. ``sweep`` holds one dict per threshold (threshold, miou,
    pixel_accuracy, spurious_activation_rate).
    """

    best_threshold: float
    miou: float
    pixel_accuracy: float
    per_class_iou: dict[str, float]
    spurious_activation_rate: float | None
    sweep: list[dict]
    n_images: int
    n_cue_images: int
    n_cue_pixels: int
    split: str
    cam_dir: str

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (NaN written as null)."""
        return _json_ready(
            {name: getattr(self, name) for name in self.__dataclass_fields__}  # keeps field order
        )


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def strongest_class(keys: np.ndarray, high_res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the class id (``keys + 1``) of the strongest CAM and its score, both (H, W).

    Without keys every score is -inf, so no threshold makes a pixel foreground.
    """
    if len(keys) == 0:
        shape = high_res.shape[1:]
        return np.zeros(shape, np.uint8), np.full(shape, -np.inf, np.float32)
    class_id = (np.asarray(keys) + 1)[high_res.argmax(axis=0)].astype(np.uint8)
    return class_id, high_res.max(axis=0).astype(np.float32)


def seed_labels(keys: np.ndarray, high_res: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Seed label maps ``(T, H, W)`` (0 background, c = class c) for each background threshold.

    Equivalent to argmax over [t, CAM_keys...] with class ids [0, keys + 1], done once per image
    for all thresholds.
    """
    thresholds = np.asarray(thresholds, dtype=np.float32).reshape(-1)
    class_id, score = strongest_class(keys, high_res)
    foreground = score[None] > thresholds[:, None, None]
    return np.where(foreground, class_id[None], np.uint8(0))


def _check_cams_present(cam_dir: Path, ids: list[str]) -> None:
    missing = [i for i in ids if not (cam_dir / f"{i}.npy").is_file()]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MissingInputError(
            f"{cam_dir}: no CAM file for {len(missing)} of {len(ids)} images ({shown}, e.g. "
            f"{cam_dir / (missing[0] + '.npy')}); run `hardood cam` for this split first"
        )


def evaluate_cams(
    cam_dir: str | Path,
    voc_root: str | Path,
    split: str = "train",
    thresholds: tuple[float, ...] | np.ndarray = DEFAULT_THRESHOLDS,
    class_names: list[str] | None = None,
    masks: str = "SegmentationClass",
) -> CamEvaluation:
    """Score the CAMs in ``cam_dir`` against the masks of a split over a threshold sweep.

    Parameters
    ----------
    cam_dir : path
        Folder of ``<id>.npy`` files in IRN's layout (see ``wood_train.cam.make``).
    voc_root : path
        Dataset root in VOC layout; ``SegmentationClass`` masks and, if present, ``CueMasks``.
    split : str
        Split name (``ImageSets/Segmentation/<split>.txt``) or a path to an id list.
    thresholds : sequence of float
        Background thresholds to sweep.
    class_names : list of str, optional
        Foreground names; read from ``voc_root`` by default.
    masks : str
        Mask folder under ``voc_root`` (``SegmentationClass`` or ``SegmentationClassAug``).

    Returns
    -------
    CamEvaluation
        Scores at the best threshold, plus the whole sweep.

    Examples
    --------
    >>> ev = evaluate_cams("runs/cams", "world", "train")
    >>> ev.miou, ev.best_threshold, ev.spurious_activation_rate
    """
    cam_dir, voc_root = Path(cam_dir), Path(voc_root)
    thresholds = np.unique(np.asarray(thresholds, dtype=np.float64))  # sorted, as swept
    if thresholds.size == 0:
        raise ConfigError("thresholds is empty; give at least one background threshold")
    names = list(class_names) if class_names is not None else voc.read_class_names(voc_root)
    num_classes = len(names)
    ids = voc.read_split(voc_root, split)
    _check_cams_present(cam_dir, ids)

    confusion = ThresholdSweepConfusion(thresholds, num_classes + 1, voc.IGNORE_INDEX)
    cue_hits = np.zeros(len(thresholds), dtype=np.int64)
    n_cue_pixels = n_cue_images = 0
    for image_id in progress(ids, desc=f"evaluate {split}", unit="img"):
        cam_path = cam_dir / f"{image_id}.npy"
        keys, high_res = load_cam(cam_path)
        mask_file = voc.mask_path(voc_root, image_id, masks)
        mask = read_label_png(mask_file)
        if high_res.shape[1:] != mask.shape:
            raise DataError(
                f"{cam_path}: CAM size {high_res.shape[1:]} != mask size {mask.shape} of {image_id!r}"
            )
        if np.isnan(high_res).any():
            raise DataError(f"{cam_path}: CAM holds NaN values; recompute it with `hardood cam`")
        if len(keys) and (keys.min() < 0 or keys.max() >= num_classes):
            raise DataError(f"{cam_path}: keys {keys.tolist()} outside [0, {num_classes})")
        class_id, score = strongest_class(keys, high_res)
        try:
            confusion.update(mask, class_id, score)
        except ValueError as exc:
            raise DataError(f"{mask_file}: {exc}") from None

        cue_path = voc_root / CUE_DIR / f"{image_id}.png"
        if cue_path.is_file():
            cue = read_label_png(cue_path)
            if cue.shape != mask.shape:
                raise DataError(f"{cue_path}: cue mask size {cue.shape} != mask size {mask.shape}")
            on_background_cue = (cue > 0) & (mask == 0)
            n_cue_images += 1
            n_cue_pixels += int(on_background_cue.sum())
            cue_hits += confusion.count_above(score[on_background_cue])

    scores = confusion.compute()
    mious = np.array([s.miou for s in scores])
    if np.isnan(mious).all():
        raise DataError(f"split {split!r} of {voc_root} has no labelled pixels to evaluate")
    best = int(np.nanargmax(mious))  # first of equals: the lowest threshold
    spurious = cue_hits / n_cue_pixels if n_cue_pixels else [None] * len(thresholds)
    sweep = [
        {
            "threshold": float(t),
            "miou": s.miou,
            "pixel_accuracy": s.pixel_accuracy,
            "spurious_activation_rate": None if rate is None else float(rate),
        }
        for t, s, rate in zip(thresholds, scores, spurious)
    ]
    return CamEvaluation(
        best_threshold=float(thresholds[best]),
        miou=scores[best].miou,
        pixel_accuracy=scores[best].pixel_accuracy,
        per_class_iou=dict(zip(["background", *names], scores[best].per_class_iou.tolist())),
        spurious_activation_rate=sweep[best]["spurious_activation_rate"],
        sweep=sweep,
        n_images=len(ids),
        n_cue_images=n_cue_images,
        n_cue_pixels=n_cue_pixels,
        split=split,
        cam_dir=str(cam_dir),
    )


def run_evaluation(config: EvalConfig) -> CamEvaluation:
    """Evaluate and write the result, the config and provenance as JSON; returns the evaluation."""
    for name, flag in (("cam_dir", "--cam-dir"), ("voc_root", "--voc-root")):
        if getattr(config, name) is None:
            raise ConfigError(f"EvalConfig.{name} is not set (pass {flag})")
    if not Path(config.cam_dir).is_dir():
        raise MissingInputError(f"CAM folder not found: {config.cam_dir}")
    voc.check_voc_root(config.voc_root, parts=("ImageSets/Segmentation",))  # masks, no images
    config = cfg.replace(config, masks=voc.resolve_masks(config.voc_root, config.masks))
    evaluation = evaluate_cams(
        config.cam_dir, config.voc_root, config.split, config.thresholds, masks=config.masks
    )
    out = Path(config.out) if config.out is not None else Path(config.cam_dir) / EVAL_NAME
    doc = {
        "evaluation": evaluation.to_dict(),
        "config": cfg.to_dict(config),
        "provenance": cfg.provenance(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    return evaluation


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def format_table(evaluation: CamEvaluation) -> str:
    """Per-class IoU table with mIoU, best threshold and spurious-activation rate (percent)."""
    width = max(len("pixel accuracy"), *(len(n) for n in evaluation.per_class_iou))
    lines = [
        f"CAM seeds: {evaluation.n_images} images of split {evaluation.split!r}, "
        f"best background threshold t = {evaluation.best_threshold:.2f}",
        f"{'class':<{width}}  IoU %",
    ]
    for name, iou in evaluation.per_class_iou.items():
        lines.append(
            f"{name:<{width}}  {_percent(iou):>5}" + ("  (absent)" if math.isnan(iou) else "")
        )
    lines.append(f"{'mIoU':<{width}}  {_percent(evaluation.miou):>5}")
    lines.append(f"{'pixel accuracy':<{width}}  {_percent(evaluation.pixel_accuracy):>5}")
    if evaluation.spurious_activation_rate is None:
        lines.append("spurious-activation rate: n/a (no CueMasks in this dataset)")
    else:
        lines.append(
            f"spurious-activation rate: {_percent(evaluation.spurious_activation_rate)}% of "
            f"{evaluation.n_cue_pixels} background cue pixels called foreground "
            f"({evaluation.n_cue_images} images with cue masks)"
        )
    return "\n".join(lines)
