"""Checkpoints that rebuild a run on their own: weights, model arguments, config, class names, hash.

Layout of a checkpoint file (``torch.save`` of a plain dict)::

    {"format": "hardood-camnet/1", "model_args": {...}, "state_dict": {...},
     "class_names": [...], "config": {...}, "weights_sha256": "...",
     "epoch": int, "step": int, "optimizer": {...} | None, "rng": {...} | None}

``weights_sha256`` is a content hash of the weights alone, so the same model saved twice has the
same hash; curate records it for every score it writes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from wood_train.errors import DataError, MissingInputError
from wood_train.model.cam_net import CamNet, build_cam_net
from wood_train.model.finite import check_finite_weights

FORMAT = "hardood-camnet/1"


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the weight tensors (sorted by name), independent of file layout."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor) or name.endswith("num_batches_tracked"):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path, model: CamNet, class_names: list[str], config: dict[str, Any], **extra: Any
) -> str:
    """Atomically write a checkpoint (temporary file, then rename); returns the weights hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = model.module if hasattr(model, "module") else model
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    digest = weights_sha256(state)
    payload = {
        "format": FORMAT,
        "model_args": dict(module.model_args),
        "state_dict": state,
        "class_names": list(class_names),
        "config": config,
        "weights_sha256": digest,
    }
    payload.update(extra)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    return digest


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU, with a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise DataError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a hardood CAM checkpoint (expected format {FORMAT})")
    return payload


def load_cam_net(
    path: str | Path, device: str | torch.device = "cpu", frozen_bn: bool | None = None
) -> tuple[CamNet, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, checkpoint dict without weights).

    ``frozen_bn`` overrides the saved setting (W-OoD continues a trainable-BN baseline with frozen BN).
    Weights holding NaN or inf (a diverged run) are refused with a ``DataError``.
    """
    payload = read_checkpoint(path)
    args = dict(payload["model_args"])
    if frozen_bn is not None:
        args["frozen_bn"] = frozen_bn
    # built without storage, then given empty tensors that the checkpoint fills: the random
    # initialisation a constructor does would be overwritten anyway (half of a resnet18's load)
    with torch.device("meta"):
        model = build_cam_net(**args)
    model = model.to_empty(device="cpu")
    for name, buffer in model.named_buffers():
        if name.endswith("num_batches_tracked"):  # a converted checkpoint may lack it: 0 as built
            buffer.zero_()
    state = payload.pop("state_dict")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise DataError(
            f"{path}: weights do not match the model; missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    check_finite_weights(model, str(path))
    payload["path"] = str(path)
    return model.to(device).eval(), payload
