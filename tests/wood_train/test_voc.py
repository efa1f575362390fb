"""PASCAL VOC 2012 as downloaded: palette masks with borders, SBD's masks, IRN's lists and labels."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from app.cli import main
from tests.wood_train.voc_devkit import (
    IRN_TRAIN_AUG,
    OBJECTS,
    SPLITS,
    planted_label,
    planted_mask,
    with_borders,
)
from wood_train.cam.evaluate import evaluate_cams
from wood_train.cam.make import load_cam, save_cam
from wood_train.data.imageio import ImageDecodeError, read_label_png, voc_palette
from wood_train.data.voc import (
    VOC_CLASSES,
    load_image_labels,
    read_class_names,
    read_split,
    resolve_masks,
)
from wood_train.errors import ConfigError, MissingInputError


def test_voc_palette_masks_keep_their_255_borders(voc_devkit):
    path = voc_devkit.voc_root / "SegmentationClass" / "2007_000063.png"
    with Image.open(path) as img:
        assert img.mode == "P"
    mask = read_label_png(path)
    np.testing.assert_array_equal(mask, with_borders(planted_mask("2007_000063")))
    assert set(np.unique(mask).tolist()) == {0, 9, 12, 255}  # chair, dog, border
    sbd = read_label_png(voc_devkit.voc_root / "SegmentationClassAug" / "2007_000063.png")
    np.testing.assert_array_equal(sbd, planted_mask("2007_000063"))


def test_rgb_mask_maps_back_through_the_voc_palette(tmp_path):
    indices = with_borders(planted_mask("2007_000033"))
    palette = np.asarray(voc_palette(), np.uint8).reshape(256, 3)
    Image.fromarray(palette[indices]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "rgb.png"), indices)
    colours = palette[indices].copy()
    colours[0, 0] = (1, 2, 3)
    Image.fromarray(colours).save(tmp_path / "odd.png")
    with pytest.raises(ImageDecodeError, match="#010203"):
        read_label_png(tmp_path / "odd.png")


def test_irn_lists_and_cls_labels_give_the_planted_labels(voc_devkit):
    root = voc_devkit.voc_root
    assert read_class_names(root) == list(VOC_CLASSES)
    ids = read_split(root, str(voc_devkit.irn_train_aug))
    assert ids == IRN_TRAIN_AUG
    expected = np.stack([planted_label(i) for i in ids])
    np.testing.assert_array_equal(load_image_labels(root, ids, 20), expected)  # int-keyed npy
    (root / "cls_labels.npy").unlink()
    np.testing.assert_array_equal(
        load_image_labels(root, ids, 20, "SegmentationClassAug"), expected
    )
    with pytest.raises(MissingInputError, match="pass --masks SegmentationClassAug"):
        load_image_labels(root, ids, 20, "SegmentationClass")  # SBD-only ids have no VOC mask


def test_the_user_picks_the_masks_when_both_folders_exist(voc_devkit):
    root = voc_devkit.voc_root
    with pytest.raises(ConfigError, match="--masks SegmentationClassAug"):
        resolve_masks(root, "auto")
    assert resolve_masks(root, "SegmentationClass") == "SegmentationClass"
    with pytest.raises(ConfigError, match="choose one of"):
        resolve_masks(root, "SegmentationObject")
    shutil.rmtree(root / "SegmentationClassAug")
    assert resolve_masks(root, "auto") == "SegmentationClass"
    with pytest.raises(MissingInputError, match="SegmentationClassAug"):
        resolve_masks(root, "SegmentationClassAug")


def test_evaluate_ignores_voc_border_pixels(voc_devkit, tmp_path):
    """CAMs that cover each object and its border band score 1.0 only if 255 is ignored."""
    cams = tmp_path / "cams"
    for image_id in SPLITS["train"]:
        mask = planted_mask(image_id)
        bordered = with_borders(mask)
        keys = np.flatnonzero(planted_label(image_id))
        # every border pixel is called foreground: right only where 255 means "ignore"
        high_res = np.stack([((mask == k + 1) | (bordered == 255)) * 1.0 for k in keys])
        save_cam(cams / f"{image_id}.npy", keys, high_res.astype(np.float32))
    result = evaluate_cams(cams, voc_devkit.voc_root, "train", (0.5,), masks="SegmentationClass")
    assert result.miou == pytest.approx(1.0)
    present = {VOC_CLASSES[k] for i in SPLITS["train"] for k in np.flatnonzero(planted_label(i))}
    assert {n for n, v in result.per_class_iou.items() if v == v} == {"background", *present}


def test_train_cam_evaluate_on_voc_as_downloaded(voc_devkit, tmp_path, capsys):
    """The README's commands: IRN's list where it lies, then copied into ImageSets as it says."""
    root, run = voc_devkit.voc_root, tmp_path / "run"
    train_args = [
        "train", "--preset", "world", "--voc-root", str(root), "--out-dir", str(run),
        "--train-split", str(voc_devkit.irn_train_aug), "--epochs", "1",
        "--batch-size", str(len(IRN_TRAIN_AUG)), "--resize-long", "56", "80", "--crop", "64",
        "--num-workers", "0",
    ]  # fmt: skip
    assert main(train_args) == 2  # both mask folders present: the user must pick
    assert "--masks SegmentationClassAug" in capsys.readouterr().err
    assert main([*train_args, "--masks", "SegmentationClass"]) == 0  # labels: cls_labels.npy
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["config"]["masks"] == "SegmentationClass"
    assert saved["class_names"] == list(VOC_CLASSES)
    assert list(pd.read_csv(run / "train_log.csv").step) == [1]  # one step: 6 images, batch 6

    shutil.copy(voc_devkit.irn_train_aug, root / "ImageSets" / "Segmentation" / "train_aug.txt")
    cams = tmp_path / "cams"
    cam_args = ["cam", "--checkpoint", str(run / "model.pt"), "--voc-root", str(root)]
    cam_args += ["--split", "train_aug", "--out", str(cams), "--scales", "1.0", "0.5"]
    assert main([*cam_args, "--num-workers", "0"]) == 0  # labels from cls_labels.npy: no --masks
    assert len(list(cams.glob("*.npy"))) == len(IRN_TRAIN_AUG)  # what IRN's cam_to_ir_label reads
    for image_id in SPLITS["train"]:
        keys, high_res = load_cam(cams / f"{image_id}.npy")
        np.testing.assert_array_equal(keys, np.flatnonzero(planted_label(image_id)))
        assert high_res.shape == (len(keys), *OBJECTS[image_id][:2])

    evaluate_args = ["evaluate", "--cam-dir", str(cams), "--voc-root", str(root)]
    assert main([*evaluate_args, "--split", "train", "--masks", "SegmentationClass"]) == 0
    doc = json.loads((cams / "eval.json").read_text())
    assert doc["config"]["masks"] == "SegmentationClass"
    assert doc["evaluation"]["n_images"] == len(SPLITS["train"])
    assert 0.0 <= doc["evaluation"]["miou"] <= 1.0
