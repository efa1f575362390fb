"""Our CAM files feed IRN's next steps: read here exactly as IRN's step/*.py read them."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.wood_train.voc_devkit import OBJECTS, SPLITS, planted_label, write_voc_devkit
from wood_train.cam.evaluate import seed_labels
from wood_train.cam.make import CamConfig, compute_irn_cams, make_cams, strided_size
from wood_train.data.imageio import read_image
from wood_train.data.transforms import normalize_image
from wood_train.data.voc import VOC_CLASSES
from wood_train.model.cam_net import build_cam_net
from wood_train.model.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_cam_net("resnet18", num_classes=len(VOC_CLASSES), output_stride=16).eval()


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return write_voc_devkit(tmp_path_factory.mktemp("data")).voc_root


@pytest.fixture(scope="module")
def cam_dir(voc_root, model, tmp_path_factory):
    """``hardood cam`` on VOC's train split of the tiny devkit, two scales with flips."""
    out = tmp_path_factory.mktemp("cams")
    checkpoint = tmp_path_factory.mktemp("run") / "model.pt"
    save_checkpoint(checkpoint, model, list(VOC_CLASSES), {"note": "random weights"})
    make_cams(CamConfig(checkpoint, voc_root, "train", out_dir=out, scales=(1.0, 0.5)))
    return out


def test_strided_cam_is_the_cam_at_irn_stride(voc_root, model):
    image = read_image(voc_root / "JPEGImages" / "2007_000063.jpg")  # 72 x 96
    x = normalize_image(image)[None]
    label = planted_label("2007_000063")
    keys, cam, high_res = compute_irn_cams(model, [x], image.shape[:2], label)
    assert strided_size(image.shape[:2]) == (18, 24)
    with torch.no_grad():
        raw = model.cam(x)[:, keys]
    expected = F.interpolate(raw, size=(18, 24), mode="bilinear", align_corners=False)[0]
    expected /= expected.amax(dim=(1, 2), keepdim=True) + 1e-5
    assert isinstance(cam, torch.Tensor) and cam.dtype == torch.float32
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=1e-5)
    assert high_res.shape == (2, 72, 96)


def test_irn_make_sem_seg_labels_reads_our_cam_key(cam_dir):
    """step/make_sem_seg_labels.py: cam_dict['cam'] goes to the GPU and meets IRN's edge map."""
    for image_id in SPLITS["train"]:
        height, width = OBJECTS[image_id][:2]
        orig_img_size = np.asarray([height, width])
        cam_dict = np.load(str(cam_dir) + "/" + image_id + ".npy", allow_pickle=True).item()
        cams = cam_dict["cam"]
        keys = np.pad(cam_dict["keys"] + 1, (1, 0), mode="constant")
        cam_downsized_values = cams.to("cpu")  # IRN: cams.cuda()
        # IRN's EdgeDisplacement crops its edge map to ((H - 1) // 4 + 1, (W - 1) // 4 + 1) and
        # propagate_to_edge multiplies the CAMs by (1 - edge) on that grid
        edge = torch.zeros(((height - 1) // 4 + 1, (width - 1) // 4 + 1))
        x = cam_downsized_values.view(-1, *edge.shape) * (1 - edge)
        rw = x.view(x.size(0), 1, *edge.shape)  # the random walk keeps this shape
        rw_up = F.interpolate(rw, scale_factor=4, mode="bilinear", align_corners=False)[
            ..., 0, : orig_img_size[0], : orig_img_size[1]
        ]
        rw_up = rw_up / torch.max(rw_up)
        rw_up_bg = F.pad(rw_up, (0, 0, 0, 0, 1, 0), value=0.25)
        rw_pred = keys[torch.argmax(rw_up_bg, dim=0).cpu().numpy()]
        assert rw_pred.shape == (height, width)
        assert set(np.unique(rw_pred)) <= {0, *(np.flatnonzero(planted_label(image_id)) + 1)}


def test_irn_make_ins_seg_labels_reads_our_cam_key(cam_dir):
    """step/make_ins_seg_labels.py: cam_dict['cam'] on the GPU, cam_dict['keys'] repeated."""
    for image_id in SPLITS["train"]:
        cam_dict = np.load(str(cam_dir) + "/" + image_id + ".npy", allow_pickle=True).item()
        cams = cam_dict["cam"].to("cpu")  # IRN: .cuda()
        keys = cam_dict["keys"]
        num_instances = 3
        instance_map = np.ones((num_instances, *cams.shape[1:]), np.float32)
        instance_cam = torch.unsqueeze(cams, 1) * torch.from_numpy(instance_map)
        assert instance_cam.shape == (len(keys), num_instances, *cams.shape[1:])
        instance_class_id = np.repeat(keys, num_instances)
        assert instance_class_id.tolist() == [k for k in keys.tolist() for _ in range(3)]


@pytest.mark.parametrize("threshold", [0.05, 0.15, 0.30])
def test_irn_high_res_readers_get_our_seeds(cam_dir, threshold):
    """step/eval_cam.py and step/cam_to_ir_label.py: high_res padded with a background plane."""
    for image_id in SPLITS["train"]:
        cam_dict = np.load(str(cam_dir) + "/" + image_id + ".npy", allow_pickle=True).item()
        cams = cam_dict["high_res"]
        keys = np.pad(cam_dict["keys"] + 1, (1, 0), mode="constant")
        fg_conf_cam = np.pad(
            cams, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=threshold
        )
        irn_seed = keys[np.argmax(fg_conf_cam, axis=0)]
        ours = seed_labels(cam_dict["keys"], cams, [threshold])[0]
        np.testing.assert_array_equal(irn_seed, ours)
