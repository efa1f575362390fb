"""The CAM classifier (WOOD_SPEC section 1): a torchvision ResNet, GAP, and a bias-free 1x1 head.

``build_cam_net(backbone="resnet50", num_classes=20, output_stride=16)`` builds the reference
model. Output stride is set the IRN way, by removing strides (no dilation), so the same code works
for BasicBlock (resnet18/34) and Bottleneck (resnet50) backbones.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from wood_train.errors import ConfigError, DataError, MissingInputError

BACKBONES = ("resnet18", "resnet34", "resnet50")


def _remove_stride(layer: nn.Sequential) -> None:
    first = layer[0]
    for conv in (first.conv1, first.conv2):
        conv.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d with FrozenBatchNorm2d carrying the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)
    return module


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights from a local torchvision-style state dict (the ``fc.*`` keys are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"backbone weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shape mismatches
        raise DataError(f"{path}: does not match the backbone: {exc}") from None
    missing = [
        k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("fc.")
    ]
    if missing or unexpected:
        raise DataError(
            f"{path}: does not match the backbone; missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )


class CamNet(nn.Module):
    """ResNet feature extractor + GAP + 1x1 bias-free classifier; logits, GAP features and CAMs."""

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 20,
        output_stride: int = 16,
        frozen_bn: bool = True,
        backbone_weights: str | Path | None = None,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        resnet = getattr(torchvision.models, backbone)(weights=None)
        if backbone_weights:
            load_backbone_weights(resnet, backbone_weights)
        if output_stride <= 16:
            _remove_stride(resnet.layer4)
        if output_stride == 8:
            _remove_stride(resnet.layer3)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        if frozen_bn:
            _freeze_batchnorm(self)
        self.feature_dim = resnet.fc.in_features
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(self.feature_dim, num_classes, kernel_size=1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        self.model_args = {
            "backbone": backbone,
            "num_classes": num_classes,
            "output_stride": output_stride,
            "frozen_bn": frozen_bn,
        }

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map F, (B, D, H/os, W/os)."""
        x = self.stem(x)
        x = self.layer2(self.layer1(x))
        return self.layer4(self.layer3(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) and the GAP feature z (B, D) that W-OoD's distances are measured on."""
        z = self.features(x).mean(dim=(2, 3))
        logits = self.classifier(z[:, :, None, None]).flatten(1)
        return logits, z

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """Logits (B, C); with ``with_features`` also z, so one DDP forward serves W-OoD's losses."""
        logits, z = self.forward_features(x)
        return (logits, z) if with_features else logits

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class activation maps ReLU(W_c . F), (B, C, H/os, W/os), not normalised."""
        return F.relu(F.conv2d(self.features(x), self.classifier.weight))

    def parameter_groups(self, freeze_stem: bool) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters that train, classifier parameters): the classifier gets 10x lr."""
        backbone = []
        modules = [self.layer1, self.layer2, self.layer3, self.layer4]
        if not freeze_stem:
            modules.insert(0, self.stem)
        else:
            for p in self.stem.parameters():
                p.requires_grad_(False)
        for module in modules:
            backbone.extend(p for p in module.parameters() if p.requires_grad)
        return backbone, list(self.classifier.parameters())


def build_cam_net(
    backbone: str = "resnet50",
    num_classes: int = 20,
    output_stride: int = 16,
    frozen_bn: bool = True,
    backbone_weights: str | Path | None = None,
) -> CamNet:
    """Build the CAM classifier by name; ``backbone_weights`` is a local ImageNet checkpoint path."""
    return CamNet(backbone, num_classes, output_stride, frozen_bn, backbone_weights)
