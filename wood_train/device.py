"""Where tensors live: the one place that picks the device and switches on AMP and pinned memory.

Every stage (train, cam, mine, the feature extraction) asks here, so a GPU run differs from a CPU
run only through these three functions::

    device = resolve_device(config.device)          # "auto" -> cuda when available
    loader = DataLoader(..., pin_memory=pin_memory(device))
    with autocast(device, config.amp):
        logits = model(images.to(device, non_blocking=True))
"""

from __future__ import annotations

import contextlib

import torch

from wood_train.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: {exc}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    return device


def pin_memory(device: torch.device) -> bool:
    """Page-locked host batches, so ``.to(device, non_blocking=True)`` overlaps the copy (CUDA)."""
    return device.type == "cuda"


def autocast(device: torch.device, enabled: bool = True, training: bool = False):
    """bf16 autocast on CUDA when ``enabled``; a no-op on CPU.

    bf16 keeps float32's range, so no loss scaling is needed; the W-OoD distances opt out of it
    themselves (see ``wood_train.wood.losses.distance_loss``). Inference falls back to fp16 on a
    card without bf16; training then runs in float32 (fp16 gradients would need a loss scaler).
    """
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    if not torch.cuda.is_bf16_supported():
        return contextlib.nullcontext() if training else torch.autocast("cuda", dtype=torch.float16)
    dtype = torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)
