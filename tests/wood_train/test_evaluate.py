"""evaluate_cams on a planted 24x24 world whose seed mIoU and spurious rate are known by hand."""

import json
import shutil

import numpy as np
import pytest

from app.cli import parse_args
from wood_train.cam.evaluate import evaluate_cams, format_table, seed_labels
from wood_train.cam.make import save_cam
from wood_train.data.imageio import write_label_png

SIZE = 24
NAMES = ["train", "boat"]


def _box(rows, cols):
    out = np.zeros((SIZE, SIZE), bool)
    out[rows, cols] = True
    return out


# id -> (objects {class id: box}, cue {class id: box} or None)
WORLD = {
    "a": ({1: _box(slice(4, 12), slice(4, 12))}, {1: _box(slice(16, 20), slice(0, 24))}),
    "b": ({2: _box(slice(10, 20), slice(10, 20))}, {2: _box(slice(0, 4), slice(0, 24))}),
    "c": ({1: _box(slice(2, 6), slice(2, 6)), 2: _box(slice(14, 22), slice(14, 22))}, None),
}


@pytest.fixture
def world(tmp_path):
    root = tmp_path / "voc"
    for folder in ("SegmentationClass", "CueMasks", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    (root / "class_names.txt").write_text("\n".join(NAMES) + "\n")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(WORLD) + "\n")
    for image_id, (objects, cues) in WORLD.items():
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for class_id, box in objects.items():
            mask[box] = class_id
        mask[0, :] = 255  # an ignore row, which overlaps image b's cue
        write_label_png(mask, root / "SegmentationClass" / f"{image_id}.png")
        if cues is not None:
            cue = np.zeros((SIZE, SIZE), np.uint8)
            for class_id, box in cues.items():
                cue[box] = class_id
            write_label_png(cue, root / "CueMasks" / f"{image_id}.png")
    return root


def _write_cams(cam_dir, cue_value=None):
    """CAMs equal to the object masks; with cue_value, each map also covers its cue (half of a's)."""
    for image_id, (objects, cues) in WORLD.items():
        keys = np.array(sorted(objects)) - 1
        maps = np.stack([objects[k + 1].astype(np.float32) for k in keys])
        if cue_value is not None and cues is not None:
            for row, k in enumerate(keys):
                cue = cues.get(k + 1, np.zeros((SIZE, SIZE), bool)).copy()
                if image_id == "a":
                    cue[:, 12:] = False
                maps[row][cue] = cue_value
        save_cam(cam_dir / f"{image_id}.npy", keys, maps)


def test_cams_equal_to_masks_are_perfect_with_no_spurious_activation(world, tmp_path):
    _write_cams(tmp_path / "cams")
    ev = evaluate_cams(tmp_path / "cams", world, "train")
    assert ev.n_images == 3 and ev.n_cue_images == 2
    assert ev.miou == pytest.approx(1.0)
    assert ev.best_threshold == pytest.approx(0.05)  # every threshold ties; the first wins
    assert all(row["miou"] == pytest.approx(1.0) for row in ev.sweep)
    assert list(ev.per_class_iou) == ["background", "train", "boat"]
    assert ev.per_class_iou == pytest.approx({"background": 1.0, "train": 1.0, "boat": 1.0})
    assert ev.spurious_activation_rate == 0.0
    # cue pixels that are ground-truth background: a's 4x24 rails, b's 3x24 sea (row 0 ignored)
    assert ev.n_cue_pixels == 96 + 72


def test_cams_on_the_cue_give_the_hand_computed_rate_and_miou(world, tmp_path):
    _write_cams(tmp_path / "cams", cue_value=0.55)
    ev = evaluate_cams(tmp_path / "cams", world, "train", thresholds=(0.3, 0.5, 0.7))
    rates = [row["spurious_activation_rate"] for row in ev.sweep]
    # below 0.55 the cue is foreground: 48 of a's 96 rail pixels and all 72 of b's sea pixels
    assert rates == pytest.approx([120 / 168, 120 / 168, 0.0])
    # at t = 0.3: train TP 64 + 16, FP 48; boat TP 100 + 64, FP 72; background 1412 GT pixels
    expected_low = (1292 / 1412 + 80 / 128 + 164 / 236) / 3
    assert ev.sweep[0]["miou"] == pytest.approx(expected_low)
    assert ev.sweep[1]["miou"] == pytest.approx(expected_low)
    assert ev.best_threshold == pytest.approx(0.7)
    assert ev.miou == pytest.approx(1.0)
    assert ev.spurious_activation_rate == 0.0


def test_without_cue_masks_the_rate_is_none(world, tmp_path):
    shutil.rmtree(world / "CueMasks")
    _write_cams(tmp_path / "cams", cue_value=0.55)
    ev = evaluate_cams(tmp_path / "cams", world, "train", thresholds=(0.3,))
    assert ev.spurious_activation_rate is None
    assert ev.n_cue_images == 0
    assert "n/a" in format_table(ev)


def test_missing_cam_names_the_image(world, tmp_path):
    _write_cams(tmp_path / "cams")
    (tmp_path / "cams" / "b.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"'b'.*hardood cam"):
        evaluate_cams(tmp_path / "cams", world, "train")


def test_cam_of_the_wrong_size_names_the_file(world, tmp_path):
    _write_cams(tmp_path / "cams")
    save_cam(tmp_path / "cams" / "a.npy", np.array([0]), np.ones((1, 12, 12), np.float32))
    with pytest.raises(ValueError, match=r"a\.npy.*CAM size"):
        evaluate_cams(tmp_path / "cams", world, "train")


def test_seed_labels_background_wins_ties():
    maps = np.array([[[0.2, 0.6, 0.9]], [[0.1, 0.7, 0.5]]], np.float32)
    seeds = seed_labels(np.array([0, 3]), maps, np.array([0.5, 0.6], np.float32))
    np.testing.assert_array_equal(seeds[:, 0], [[0, 4, 1], [0, 4, 1]])
    seeds = seed_labels(np.array([0]), maps[:1], np.array([0.6], np.float32))
    np.testing.assert_array_equal(seeds[0, 0], [0, 0, 1])  # 0.6 is not above t = 0.6


def test_cli_prints_the_table_and_writes_json(world, tmp_path, capsys):
    _write_cams(tmp_path / "cams", cue_value=0.55)
    argv = ["evaluate", "--cam-dir", str(tmp_path / "cams"), "--voc-root", str(world)]
    args = parse_args([*argv, "--thresholds", "0.3", "0.7"])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "best background threshold t = 0.70" in table
    assert "mIoU" in table and "100.0" in table and "boat" in table
    doc = json.loads((tmp_path / "cams" / "eval.json").read_text())
    assert doc["evaluation"]["best_threshold"] == pytest.approx(0.7)
    assert doc["evaluation"]["sweep"][0]["spurious_activation_rate"] == pytest.approx(120 / 168)
    assert doc["config"]["thresholds"] == [0.3, 0.7]

    # the written JSON is a config to repeat the run from; --out moves the result
    args = parse_args(
        [
            "evaluate",
            "--config",
            str(tmp_path / "cams" / "eval.json"),
            "--out",
            str(tmp_path / "e.json"),
        ]
    )
    assert args.func(args) == 0
    assert json.loads((tmp_path / "e.json").read_text())["evaluation"]["n_images"] == 3
