"""Per-epoch held-out metrics: classification mAP and, where the split has masks, CAM mIoU.

Selection uses the held-out CAM mIoU (the quantity the method optimises, single scale for speed);
without masks the last epoch is kept. The split that is reported (VOC ``train`` for seeds) is
never the selection split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wood_train.cam.evaluate import DEFAULT_THRESHOLDS, strongest_class
from wood_train.cam.make import compute_cam
from wood_train.cam.metrics import ThresholdSweepConfusion, multilabel_average_precision
from wood_train.data.imageio import read_image, read_label_png
from wood_train.data.transforms import normalize_image
from wood_train.data.voc import image_path, load_image_labels, mask_path, read_split


def _has_masks(voc_root, ids, masks: str) -> bool:
    try:
        mask_path(voc_root, ids[0], masks)
    except FileNotFoundError:
        return False
    return True


@torch.inference_mode()
def validate(model, config, class_names: list[str], device, max_images: int = 2000) -> dict:
    """Returns ``{"val_map", "val_cam_miou"?, "selection_score"?}`` on ``config.val_split``."""
    ids = read_split(config.voc_root, config.val_split)[:max_images]
    labels = load_image_labels(config.voc_root, ids, len(class_names), config.masks)
    with_masks = _has_masks(config.voc_root, ids, config.masks)
    sweep = ThresholdSweepConfusion(DEFAULT_THRESHOLDS, len(class_names) + 1)
    cue_above, cue_total = np.zeros(len(sweep.thresholds), np.int64), 0
    was_training = model.training
    model.eval()
    scores = []
    for image_id, label in zip(ids, labels):
        image = read_image(image_path(config.voc_root, image_id))
        x = normalize_image(image)[None].to(device)
        scores.append(torch.sigmoid(model(x))[0].float().cpu().numpy())
        if with_masks:
            keys, high_res = compute_cam(model, [x], image.shape[:2], label)
            target = read_label_png(mask_path(config.voc_root, image_id, config.masks))
            fg_class, fg_score = strongest_class(keys, high_res)
            sweep.update(target, fg_class, fg_score)
            cue_path = Path(config.voc_root) / "CueMasks" / f"{image_id}.png"
            if (
                cue_path.is_file()
            ):  # spurious activation: cue pixels (ground-truth background) called foreground
                cue = (read_label_png(cue_path) > 0) & (target == 0)
                cue_above += sweep.count_above(fg_score[cue])
                cue_total += int(cue.sum())
    model.train(was_training)
    val_map, _ = multilabel_average_precision(np.stack(scores), labels)
    metrics = {"val_map": float(val_map)}
    if with_masks:
        mious = [s.miou for s in sweep.compute()]
        best = int(np.nanargmax(mious))
        metrics["val_cam_miou"] = float(mious[best])
        if cue_total:
            metrics["val_spurious"] = float(cue_above[best] / cue_total)
        metrics["selection_score"] = float(mious[best])
    return metrics
