"""The CAM classifier: shapes per output stride, frozen BN, local backbone weights, checkpoints."""

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from wood_train.model.cam_net import build_cam_net
from wood_train.model.checkpoint import load_cam_net, save_checkpoint


@pytest.mark.parametrize("backbone, dim", [("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("stride", [8, 16, 32])
def test_shapes_follow_output_stride(backbone, dim, stride):
    model = build_cam_net(backbone, num_classes=3, output_stride=stride).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, z = model.forward_features(x)
    assert logits.shape == (2, 3) and z.shape == (2, dim)
    assert model.cam(x).shape == (2, 3, 64 // stride, 64 // stride)


def test_logits_are_the_classifier_applied_to_gap_and_cams_are_relu_of_w_f():
    model = build_cam_net("resnet18", 4, 16).eval()
    x = torch.randn(1, 3, 64, 64)
    feats = model.features(x)
    logits, z = model.forward_features(x)
    w = model.classifier.weight[:, :, 0, 0]
    assert torch.allclose(z, feats.mean((2, 3)), atol=1e-6)
    assert torch.allclose(logits, z @ w.T, atol=1e-5)
    assert torch.allclose(
        model.cam(x), torch.relu(torch.einsum("cd,bdhw->bchw", w, feats)), atol=1e-5
    )
    assert model.classifier.bias is None


def test_frozen_bn_has_no_trainable_statistics():
    model = build_cam_net("resnet18", 2, 16, frozen_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_backbone_weights_load_from_a_local_file(tmp_path):
    reference = torchvision.models.resnet18()
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "imagenet.pth")
    model = build_cam_net(
        "resnet18", 5, 16, frozen_bn=False, backbone_weights=tmp_path / "imagenet.pth"
    )
    assert torch.equal(model.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="wrong.pth"):
        build_cam_net("resnet18", 5, 16, backbone_weights=tmp_path / "wrong.pth")
    with pytest.raises(FileNotFoundError):
        build_cam_net("resnet18", 5, 16, backbone_weights=tmp_path / "missing.pth")


def test_checkpoint_round_trip_keeps_outputs_and_hash(tmp_path):
    model = build_cam_net("resnet18", 3, 8, frozen_bn=False).eval()
    digest = save_checkpoint(tmp_path / "m.pt", model, ["a", "b", "c"], {"lr": 0.1})
    loaded, meta = load_cam_net(tmp_path / "m.pt")
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert meta["weights_sha256"] == digest and meta["class_names"] == ["a", "b", "c"]
    assert save_checkpoint(tmp_path / "again.pt", loaded, ["a", "b", "c"], {}) == digest
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_cam_net(tmp_path / "junk.pt")


def test_a_loaded_checkpoint_holds_exactly_its_weights_as_trainable_or_frozen_bn(tmp_path):
    """Loading builds the model without its random initialisation: every tensor comes from the
    file, and a counter a converted checkpoint lacks (num_batches_tracked) starts at 0."""
    torch.manual_seed(0)
    model = build_cam_net("resnet18", 3, 16, frozen_bn=False)
    model.train()(torch.randn(4, 3, 32, 32))  # moves the BN statistics and counters
    model.eval()
    save_checkpoint(tmp_path / "m.pt", model, ["a", "b", "c"], {})
    payload = torch.load(tmp_path / "m.pt", weights_only=False)
    payload["state_dict"] = {
        k: v for k, v in payload["state_dict"].items() if not k.endswith("num_batches_tracked")
    }
    torch.save(payload, tmp_path / "converted.pt")
    saved = model.state_dict()
    loaded, _ = load_cam_net(tmp_path / "m.pt")
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
    converted, _ = load_cam_net(tmp_path / "converted.pt")
    for name, value in converted.state_dict().items():
        want = torch.zeros_like(value) if name.endswith("num_batches_tracked") else saved[name]
        assert torch.equal(value, want), name
    frozen, _ = load_cam_net(tmp_path / "m.pt", frozen_bn=True)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(frozen(x), model(x), atol=1e-5)
