import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from app.cli import parse_args
from wood_train.cam import make as cam_module
from wood_train.cam.evaluate import evaluate_cams
from wood_train.cam.make import (
    CamConfig,
    CamInferenceDataset,
    compute_cam,
    load_cam,
    make_cams,
    save_cam,
)
from wood_train.data.imageio import write_label_png
from wood_train.data.transforms import normalize_image
from wood_train.errors import OutputExistsError
from wood_train.model.cam_net import build_cam_net
from wood_train.model.checkpoint import save_checkpoint

NAMES = ["train", "boat", "plane"]
IDS = ["img0", "img1", "img2"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_cam_net("resnet18", num_classes=len(NAMES), output_stride=16).eval()


def _image(seed, height=40, width=48):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def voc_world(tmp_path, model):
    """Three 40x48 images; image i holds class i + 1 and, for i = 2, also class 1."""
    root = tmp_path / "voc"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    (root / "class_names.txt").write_text("\n".join(NAMES) + "\n")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(IDS) + "\n")
    for i, image_id in enumerate(IDS):
        Image.fromarray(_image(i)).save(root / "JPEGImages" / f"{image_id}.png")
        mask = np.zeros((40, 48), np.uint8)
        mask[5:20, 5:20] = i + 1
        if i == 2:
            mask[25:35, 25:40] = 1
        write_label_png(mask, root / "SegmentationClass" / f"{image_id}.png")
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model, NAMES, {"note": "random weights"})
    return root, checkpoint


def _direct_cam(model, image, keys):
    """ReLU(W . F) from the feature map and classifier weight, bilinear to image size, max-normalised."""
    x = normalize_image(image)[None]
    with torch.no_grad():
        features = model.features(x)
        weight = model.classifier.weight[:, :, 0, 0]
        cams = torch.relu(torch.einsum("kd,bdhw->bkhw", weight[keys], features))
    cams = F.interpolate(cams, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    return (cams / (cams.amax(dim=(1, 2), keepdim=True) + 1e-5)).numpy()


def test_single_scale_without_flip_equals_direct_computation(model):
    image = _image(5)
    label = np.array([1.0, 0.0, 1.0])
    keys, high_res = compute_cam(model, [normalize_image(image)[None]], image.shape[:2], label)
    np.testing.assert_array_equal(keys, [0, 2])
    assert high_res.shape == (2, 40, 48) and high_res.dtype == np.float32
    np.testing.assert_allclose(high_res, _direct_cam(model, image, [0, 2]), atol=1e-5)


def test_multi_scale_flip_cams_keep_label_classes_and_normalise(model):
    image = _image(6)
    scales = []
    for s in (1.0, 0.5, 1.5):
        scaled = image if s == 1.0 else cam_module._rescale(image, s)
        t = normalize_image(scaled)
        scales.append(torch.stack([t, t.flip(-1)]))
    keys, high_res = compute_cam(model, scales, (40, 48), torch.tensor([0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(keys, [1])
    assert high_res.shape == (1, 40, 48)
    assert 0.999 < high_res.max() < 1.0 and high_res.min() >= 0.0
    keys, high_res = compute_cam(model, scales, (40, 48), np.zeros(3))
    assert keys.shape == (0,) and high_res.shape == (0, 40, 48)


def test_flip_averaging_is_flip_invariant(model):
    half = _image(7, 32, 24)
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)  # 32x48, mirror-symmetric
    label = np.array([1.0, 1.0, 1.0])

    def flip_cam(image):
        t = normalize_image(np.ascontiguousarray(image))
        return compute_cam(model, [torch.stack([t, t.flip(-1)])], image.shape[:2], label)[1]

    on_symmetric = flip_cam(symmetric)
    np.testing.assert_allclose(on_symmetric, on_symmetric[:, :, ::-1], atol=1e-5)
    image = _image(8, 32, 48)
    np.testing.assert_allclose(flip_cam(image[:, ::-1]), flip_cam(image)[:, :, ::-1], atol=1e-5)


def test_dataset_items_stack_each_scale_with_its_flip(voc_world):
    root, _ = voc_world
    labels = np.eye(3, dtype=np.float32)
    dataset = CamInferenceDataset(root, IDS, labels, scales=(1.0, 0.5))
    item = dataset[1]
    assert item["id"] == "img1" and tuple(item["size"]) == (40, 48)
    assert [tuple(x.shape) for x in item["images"]] == [(2, 3, 40, 48), (2, 3, 20, 24)]
    torch.testing.assert_close(item["images"][0][0], normalize_image(_image(1)))
    torch.testing.assert_close(item["images"][1][1], item["images"][1][0].flip(-1))
    torch.testing.assert_close(item["label"], torch.tensor([0.0, 1.0, 0.0]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1)
    assert [batch["id"] for batch in loader] == IDS


def test_save_load_round_trip_in_irn_layout(tmp_path):
    keys = np.array([3, 7])
    high_res = np.random.default_rng(0).random((2, 5, 6)).astype(np.float32)
    path = save_cam(tmp_path / "x.npy", keys, high_res)
    raw = np.load(path, allow_pickle=True).item()  # how IRN readers open it
    assert set(raw) == {"keys", "high_res"} and raw["keys"].dtype == np.int64
    loaded_keys, loaded = load_cam(path)
    np.testing.assert_array_equal(loaded_keys, keys)
    np.testing.assert_array_equal(loaded, high_res)
    assert not list(tmp_path.glob("*.tmp"))
    # IRN itself saves keys as a torch tensor
    np.save(tmp_path / "irn.npy", {"keys": torch.tensor([1]), "high_res": high_res[:1]})
    np.testing.assert_array_equal(load_cam(tmp_path / "irn.npy")[0], [1])


def test_bad_cam_files_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"bad\.npy.*K = len\(keys\) = 1"):
        save_cam(tmp_path / "bad.npy", np.array([0]), np.zeros((2, 4, 4)))
    np.save(tmp_path / "other.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.npy: not a CAM file"):
        load_cam(tmp_path / "other.npy")


def test_make_cams_writes_every_image_and_resumes(voc_world, tmp_path):
    root, checkpoint = voc_world
    out = tmp_path / "cams"
    config = CamConfig(checkpoint=checkpoint, voc_root=root, out_dir=out, scales=(1.0, 0.5))
    config = cam_module.cfg.replace(config, num_workers=0, overlays=True, device="cpu")
    assert make_cams(config) == out
    expected_keys = {"img0": [0], "img1": [1], "img2": [0, 2]}
    for image_id, keys in expected_keys.items():
        loaded_keys, high_res = load_cam(out / f"{image_id}.npy")
        assert loaded_keys.tolist() == keys and high_res.shape == (len(keys), 40, 48)
        assert Image.open(out / "overlays" / f"{image_id}.png").size == (48, 40)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["summary"]["written"] == 3 and saved["config"]["scales"] == [1.0, 0.5]

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    make_cams(config)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")} == stamps
    assert yaml.safe_load((out / "config.yaml").read_text())["summary"]["written"] == 0

    (out / "img1.npy").unlink()
    (out / "overlays" / "img0.png").unlink()
    make_cams(cam_module.cfg.replace(config, num_workers=1))
    assert yaml.safe_load((out / "config.yaml").read_text())["summary"]["written"] == 1
    assert (out / "img1.npy").is_file() and (out / "overlays" / "img0.png").is_file()
    assert (out / "img0.npy").stat().st_mtime_ns == stamps["img0.npy"]
    assert evaluate_cams(out, root, "train").n_images == 3  # the evaluator reads what we write


def test_make_cams_will_not_mix_two_models_in_one_folder(voc_world, tmp_path):
    root, checkpoint = voc_world
    config = CamConfig(checkpoint=checkpoint, voc_root=root, out_dir=tmp_path / "c", num_workers=0)
    make_cams(cam_module.cfg.replace(config, scales=(1.0,)))
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_checkpoint(other, build_cam_net("resnet18", num_classes=len(NAMES)), NAMES, {})
    with pytest.raises(OutputExistsError, match="holds CAMs of another run"):
        make_cams(cam_module.cfg.replace(config, checkpoint=other, scales=(1.0,)))
    with pytest.raises(OutputExistsError, match="holds CAMs of another run"):
        make_cams(cam_module.cfg.replace(config, scales=(1.0, 0.5)))


def test_make_cams_rejects_a_model_for_other_classes(voc_world, tmp_path):
    root, _ = voc_world
    other = tmp_path / "five.pt"
    save_checkpoint(other, build_cam_net("resnet18", num_classes=5), list("abcde"), {})
    config = CamConfig(checkpoint=other, voc_root=root, out_dir=tmp_path / "c", num_workers=0)
    with pytest.raises(ValueError, match="5 classes but .* names 3"):
        make_cams(config)
    with pytest.raises(ValueError, match="--checkpoint"):
        make_cams(CamConfig(voc_root=root, out_dir=tmp_path / "c"))


def test_cli_runs_and_prints_a_summary(voc_world, tmp_path, capsys):
    root, checkpoint = voc_world
    argv = [
        "cam",
        "--checkpoint",
        str(checkpoint),
        "--voc-root",
        str(root),
        "--out",
        str(tmp_path / "c"),
    ]
    args = parse_args([*argv, "--scales", "1.0", "--num-workers", "0", "--device", "cpu"])
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("cam: 3 images of split 'train'") and "3 written" in line
    assert not (tmp_path / "c" / "overlays").exists()
    args = parse_args(["cam", "--config", str(tmp_path / "c" / "config.yaml"), "--overlays"])
    assert args.func(args) == 0
    assert "0 written, 3 already present" in capsys.readouterr().out
    assert len(list((tmp_path / "c" / "overlays").glob("*.png"))) == 3


def test_a_parent_folder_is_not_a_voc_root(voc_world, tmp_path):
    root, checkpoint = voc_world  # root is tmp_path / "voc": its parent holds it
    config = CamConfig(checkpoint=checkpoint, voc_root=root.parent, out_dir=tmp_path / "c")
    with pytest.raises(FileNotFoundError) as info:
        make_cams(config)
    assert f"--voc-root {root.parent} is not a VOC root" in str(info.value)
    assert f"did you mean --voc-root {root}?" in str(info.value)
    assert not (tmp_path / "c").exists()


def _diverged_checkpoint(path, weight):
    torch.manual_seed(0)
    model = build_cam_net("resnet18", num_classes=len(NAMES), output_stride=16)
    with torch.no_grad():
        model.classifier.weight.fill_(weight)
    save_checkpoint(path, model, NAMES, {})
    return path


@pytest.mark.parametrize(
    "weight, message",
    [
        (float("nan"), "weight tensor(s) hold NaN or inf (first: classifier.weight)"),
        # finite weights whose logits overflow float32: caught on the first image's outputs
        (3e38, "the model computes NaN or inf (logits, CAM) on the images given"),
    ],
)
def test_make_cams_refuses_a_diverged_model_before_writing(voc_world, tmp_path, weight, message):
    root, _ = voc_world
    checkpoint = _diverged_checkpoint(tmp_path / "diverged.pt", weight)
    config = CamConfig(checkpoint=checkpoint, voc_root=root, out_dir=tmp_path / "c", num_workers=0)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        make_cams(config)
    assert "\n" not in str(info.value) and "--lr" in str(info.value)
    assert not list((tmp_path / "c").glob("*.npy"))
