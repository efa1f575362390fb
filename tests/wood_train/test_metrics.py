import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from wood_train.cam.evaluate import seed_labels
from wood_train.cam.metrics import (
    ConfusionMatrix,
    ConfusionMatrixStack,
    ThresholdSweepConfusion,
    multilabel_average_precision,
)

NUM_CLASSES = 6
ABSENT = 4  # never in target nor prediction: its IoU must be NaN and left out of mIoU


def _random_batch(rng, shape=(3, 17, 13)):
    target = rng.integers(0, NUM_CLASSES, size=shape)
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, NUM_CLASSES, size=shape))
    target[target == ABSENT] = 0
    pred[pred == ABSENT] = 1
    target[rng.random(shape) < 0.1] = 255
    return pred.astype(np.uint8), target.astype(np.uint8)


def test_iou_matches_torchmetrics_over_accumulated_batches():
    rng = np.random.default_rng(0)
    ours = ConfusionMatrix(NUM_CLASSES, ignore_index=255)
    reference = MulticlassJaccardIndex(num_classes=NUM_CLASSES, average=None, ignore_index=255)
    preds, targets = [], []
    for i in range(4):
        pred, target = _random_batch(rng)
        # numpy and torch inputs both accepted
        ours.update(pred, target) if i % 2 else ours.update(
            torch.from_numpy(pred), torch.from_numpy(target)
        )
        reference.update(torch.from_numpy(pred).long(), torch.from_numpy(target).long())
        preds.append(pred)
        targets.append(target)
    scores = ours.compute()
    expected = reference.compute().double().numpy()
    present = np.arange(NUM_CLASSES) != ABSENT

    assert np.isnan(scores.per_class_iou[ABSENT])
    np.testing.assert_allclose(scores.per_class_iou[present], expected[present], atol=1e-6)
    assert scores.miou == pytest.approx(expected[present].mean(), abs=1e-6)
    pred, target = np.concatenate(preds), np.concatenate(targets)
    valid = target != 255
    assert scores.pixel_accuracy == pytest.approx((pred[valid] == target[valid]).mean(), abs=1e-12)
    assert scores.confusion.sum() == valid.sum()


def test_reset_and_exact_counts_on_a_tiny_map():
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [1, 255]]))
    np.testing.assert_array_equal(cm.mat, [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    scores = cm.compute()
    np.testing.assert_allclose(scores.per_class_iou, [1.0, 0.5, 0.0])
    assert scores.pixel_accuracy == pytest.approx(2 / 3)
    cm.reset()
    assert cm.mat.sum() == 0


def test_stack_equals_one_matrix_per_prediction():
    rng = np.random.default_rng(1)
    stack = ConfusionMatrixStack(3, NUM_CLASSES)
    singles = [ConfusionMatrix(NUM_CLASSES) for _ in range(3)]
    for _ in range(2):
        _, target = _random_batch(rng, (9, 11))
        preds = rng.integers(0, NUM_CLASSES, size=(3, 9, 11))
        stack.update(preds, target)
        for single, pred in zip(singles, preds):
            single.update(pred, target)
    for scores, single in zip(stack.compute(), singles):
        np.testing.assert_array_equal(scores.confusion, single.mat)


def test_threshold_sweep_equals_one_matrix_per_threshold_seed():
    rng = np.random.default_rng(2)
    thresholds = np.array([0.1, 0.25, 0.5, 0.75], np.float32)
    sweep = ThresholdSweepConfusion(thresholds, NUM_CLASSES)
    singles = [ConfusionMatrix(NUM_CLASSES) for _ in thresholds]
    cue_scores = []
    for _ in range(3):
        _, target = _random_batch(rng, (10, 12))
        keys = np.array([0, 2, 3])  # class ids 1, 3, 4
        high_res = rng.random((3, 10, 12)).astype(np.float32)
        high_res[:, :2] = 0.05
        high_res[0, :2] = 0.25  # exact ties with a threshold: background must win there
        sweep.update(target, (keys + 1)[high_res.argmax(0)], high_res.max(0))
        for single, seeds in zip(singles, seed_labels(keys, high_res, thresholds)):
            single.update(seeds, target)
        cue_scores.append(high_res.max(0).ravel())
    for scores, single in zip(sweep.compute(), singles):
        np.testing.assert_array_equal(scores.confusion, single.mat)
    cue_scores = np.concatenate(cue_scores)
    expected = [(cue_scores > t).sum() for t in thresholds]
    np.testing.assert_array_equal(sweep.count_above(cue_scores), expected)
    with pytest.raises(ValueError, match="strictly increasing"):
        ThresholdSweepConfusion([0.5, 0.3], NUM_CLASSES)


def test_bad_inputs_are_named():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="target holds label 7"):
        cm.update(np.zeros(2, int), np.array([0, 7]))
    with pytest.raises(ValueError, match="prediction holds label 3"):
        cm.update(np.array([3, 0]), np.zeros(2, int))


def test_multilabel_average_precision_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.9, 0.4], [0.7, 0.2, 0.3], [0.6, 0.8, 0.2]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    mean, per_class = multilabel_average_precision(scores, labels)
    # class 0: positives ranked 1st and 3rd -> (1/1 + 2/3) / 2; class 1: ranked 1st, 2nd -> 1
    assert per_class[0] == pytest.approx((1 + 2 / 3) / 2)
    assert per_class[1] == pytest.approx(1.0)
    assert np.isnan(per_class[2])  # no positives: undefined, not counted
    assert mean == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        multilabel_average_precision(scores[:, :2], labels)
