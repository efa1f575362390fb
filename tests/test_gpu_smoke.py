"""benches/gpu_smoke.py's expected figures rest on FLOP counts; check them against known values."""

import pytest

from benches.gpu_smoke import (
    climb_flops,
    expected_rate,
    forward_flops,
    train_flops,
)
from wood_train.model.cam_net import build_cam_net


def test_resnet50_forward_flops_match_the_published_figure():
    """torchvision lists ResNet-50 (stride 32) at 4.09 GFLOPS, counting multiply-adds, at 224 px."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_cam_net("resnet50", 1000, output_stride=32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert counter.get_total_flops() / 2 == pytest.approx(4.09e9, rel=0.01)


def test_stage_flops_scale_as_their_work():
    forward = forward_flops(512, 512)
    # a training step: forward + input gradients + weight gradients (none for the frozen stem)
    assert 2.5 * forward < train_flops(512) < 3.0 * forward
    assert 1.9 * forward < climb_flops(512) < 2.1 * forward  # forward + input gradients only
    assert forward_flops(256, 256) == pytest.approx(forward / 4, rel=0.02)


def test_expected_rate_is_bounded_by_the_loader():
    flops = 100e9  # 1e14 FLOP/s x 0.2 / 1e11 = 200 img/s
    assert expected_rate(flops, 100.0, loader_ceiling=1000.0) == pytest.approx(200.0)
    assert expected_rate(flops, 100.0, loader_ceiling=50.0) == 50.0
