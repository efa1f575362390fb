"""Metrics that accumulate: confusion matrices for segmentation, average precision for classifiers.

``ConfusionMatrix`` follows torchvision's references/segmentation: feed batches with ``update``,
read global pixel accuracy and per-class IoU from ``compute`` at the end. ``ConfusionMatrixStack``
keeps several matrices that share one target and fills them in one ``bincount``;
``ThresholdSweepConfusion`` is the faster special case for CAM seeds over a sweep of background
thresholds (one count per pixel instead of one per pixel and threshold).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from wood_train.data.voc import IGNORE_INDEX


@dataclass(frozen=True)
class SegmentationScores:
    """What a confusion matrix says; IoUs are fractions in [0, 1].

    ``per_class_iou[c]`` is NaN where class ``c`` is in neither prediction nor target (no union);
    ``miou`` is the mean over the other classes.
    """

    pixel_accuracy: float
    per_class_iou: np.ndarray
    miou: float
    confusion: np.ndarray  # (n, n) int64, rows = target, columns = prediction


def scores_from_confusion(confusion: np.ndarray) -> SegmentationScores:
    """Pixel accuracy, per-class IoU and mIoU of one ``(n, n)`` matrix (rows target, cols pred)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    true_positive = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    total = confusion.sum()
    accuracy = float(true_positive.sum() / total) if total else float("nan")
    miou = float(np.nanmean(iou)) if np.any(union > 0) else float("nan")
    return SegmentationScores(accuracy, iou, miou, confusion.copy())


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_range(values: np.ndarray, num_classes: int, what: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = values[(values < 0) | (values >= num_classes)][0]
        raise ValueError(f"{what} holds label {bad}, outside [0, {num_classes})")


def _confusion_counts(
    preds: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int
) -> np.ndarray:
    """(M, n, n) counts for M flat predictions of one flat target, via one bincount."""
    keep = target != ignore_index
    target = target[keep].astype(np.int64)
    preds = preds[:, keep].astype(np.int64)
    _check_range(target, num_classes, "target")
    _check_range(preds, num_classes, "prediction")
    n = num_classes
    offsets = np.arange(len(preds), dtype=np.int64)[:, None] * (n * n)
    index = offsets + target[None, :] * n + preds
    return np.bincount(index.ravel(), minlength=len(preds) * n * n).reshape(len(preds), n, n)


class ConfusionMatrix:
    """Accumulating ``num_classes`` x ``num_classes`` confusion matrix; ``ignore_index`` is skipped.

    Examples
    --------
    >>> cm = ConfusionMatrix(21)
    >>> for pred, mask in batches:
    ...     cm.update(pred, mask)
    >>> cm.compute().miou
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Add one batch; ``pred`` and ``target`` are integer labels of the same (any) shape."""
        pred, target = _as_numpy(pred), _as_numpy(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
        counts = _confusion_counts(
            pred.reshape(1, -1), target.reshape(-1), self.num_classes, self.ignore_index
        )
        self.mat += counts[0]

    def reset(self) -> None:
        self.mat[:] = 0

    def compute(self) -> SegmentationScores:
        return scores_from_confusion(self.mat)


class ConfusionMatrixStack:
    """``num_matrices`` confusion matrices updated together against one shared target."""

    def __init__(self, num_matrices: int, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = np.zeros((int(num_matrices), self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, preds: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Add one target with one prediction per matrix: ``preds`` is ``(M, *target.shape)``."""
        preds, target = _as_numpy(preds), _as_numpy(target)
        if preds.shape != (len(self.mat), *target.shape):
            raise ValueError(
                f"predictions shape {preds.shape} != ({len(self.mat)}, *{target.shape})"
            )
        self.mat += _confusion_counts(
            preds.reshape(len(preds), -1), target.reshape(-1), self.num_classes, self.ignore_index
        )

    def compute(self) -> list[SegmentationScores]:
        return [scores_from_confusion(m) for m in self.mat]


class ThresholdSweepConfusion:
    """Confusion matrices of background-threshold seeds, one per threshold of a sweep.

    A pixel whose strongest foreground score is ``s`` (class ``c``) is labelled ``c`` at threshold
    ``t`` when ``s > t`` and ``background`` otherwise (the background map wins ties). Each pixel is
    counted once by (target, c, number of thresholds below s); cumulating those counts over the
    sweep yields every matrix, O(P log T) per image instead of O(P T).

    Examples
    --------
    >>> sweep = ThresholdSweepConfusion([0.1, 0.2, 0.3], num_classes=21)
    >>> sweep.update(mask, fg_class, fg_score)
    >>> [s.miou for s in sweep.compute()]
    """

    def __init__(
        self,
        thresholds: np.ndarray | list[float],
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        background: int = 0,
    ):
        thresholds = np.asarray(thresholds, dtype=np.float32).reshape(-1)
        if thresholds.size == 0 or np.any(np.diff(thresholds) <= 0):
            raise ValueError(f"thresholds must be strictly increasing, got {thresholds.tolist()}")
        self.thresholds = thresholds
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.background = background
        # counts[l, g, c]: pixels of target g, strongest class c, with l thresholds below their score
        self.counts = np.zeros((len(thresholds) + 1, num_classes, num_classes), dtype=np.int64)

    def levels(self, scores: np.ndarray) -> np.ndarray:
        """How many thresholds lie strictly below each score (foreground at threshold i iff > i)."""
        return np.searchsorted(self.thresholds, np.asarray(scores, dtype=np.float32), side="left")

    def count_above(self, scores: np.ndarray) -> np.ndarray:
        """``(T,)``: how many of ``scores`` exceed each threshold (are foreground at it)."""
        per_level = np.bincount(self.levels(scores).ravel(), minlength=len(self.thresholds) + 1)
        return per_level[::-1].cumsum()[::-1][1:]

    def update(self, target: np.ndarray, fg_class: np.ndarray, fg_score: np.ndarray) -> None:
        """Add one image: target labels, strongest foreground class and its score, same shape."""
        target, fg_class, fg_score = _as_numpy(target), _as_numpy(fg_class), _as_numpy(fg_score)
        if not target.shape == fg_class.shape == fg_score.shape:
            raise ValueError(
                f"target {target.shape}, classes {fg_class.shape} and scores {fg_score.shape} differ"
            )
        keep = target != self.ignore_index
        target, fg_class = target[keep].astype(np.int64), fg_class[keep].astype(np.int64)
        _check_range(target, self.num_classes, "target")
        _check_range(fg_class, self.num_classes, "prediction")
        n = self.num_classes
        index = (self.levels(fg_score[keep]) * n + target) * n + fg_class
        self.counts += np.bincount(index, minlength=self.counts.size).reshape(self.counts.shape)

    def confusion(self) -> np.ndarray:
        """``(T, n, n)`` matrices, rows target, columns prediction, in threshold order."""
        at_or_above = np.cumsum(self.counts[::-1], axis=0)[::-1]  # [l] = sum over levels >= l
        matrices = at_or_above[1:].copy()  # foreground at threshold i: level > i
        per_target = self.counts.sum(axis=(0, 2))
        matrices[:, :, self.background] += per_target[None] - at_or_above[1:].sum(axis=2)
        return matrices

    def compute(self) -> list[SegmentationScores]:
        return [scores_from_confusion(m) for m in self.confusion()]


def multilabel_average_precision(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> tuple[float, np.ndarray]:
    """Classifier mAP over classes, with torchmetrics' average precision per class.

    Parameters
    ----------
    scores : (N, C) array
        Logits or probabilities (AP depends on the ranking only).
    labels : (N, C) array
        Multi-hot ground truth.

    Returns
    -------
    mAP : float
        Mean AP over the classes that have at least one positive (NaN if none has).
    per_class : (C,) float array
        AP per class; NaN for a class without positives, where AP is undefined.
    """
    scores_t = torch.as_tensor(_as_numpy(scores), dtype=torch.float32)
    labels_t = torch.as_tensor(_as_numpy(labels)).long()
    if scores_t.ndim != 2 or scores_t.shape != labels_t.shape:
        raise ValueError(
            f"scores {tuple(scores_t.shape)} and labels {tuple(labels_t.shape)} must both be (N, C)"
        )
    # imported here: torchmetrics adds seconds to every CLI start, and only this function needs it
    from torchmetrics.functional.classification import multilabel_average_precision as _ap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No positive samples")
        per_class = _ap(scores_t, labels_t, num_labels=scores_t.shape[1], average=None)
    per_class = per_class.double().numpy().copy()
    per_class[labels_t.sum(0).numpy() == 0] = np.nan
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return mean, per_class
