"""Refuse a model that computes NaN or inf: a diverged run must not turn into CAMs or scores.

``hardood cam`` and ``hardood mine`` call ``check_finite_outputs`` on the first batch they compute
(and the trainer checks every step, see ``wood_train.train``). One clear line names the checkpoint
and what to do, instead of NaN CAMs on disk or a database constraint failing later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from wood_train.errors import DataError

RETRAIN_HINT = (
    "it comes from a diverged training run: retrain with a lower --lr, or start from ImageNet "
    "weights (--backbone-weights)"
)


def _all_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all()) if value.is_floating_point() else True
    array = np.asarray(value)
    return bool(np.isfinite(array).all()) if array.dtype.kind in "fc" else True


def nonfinite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` holding NaN or inf."""
    named: Iterable = list(model.named_parameters()) + list(model.named_buffers())
    return [name for name, tensor in named if not _all_finite(tensor)]


def check_finite_outputs(outputs: Mapping[str, object], source: str) -> None:
    """Raise ``DataError`` when any of the named outputs (tensors or arrays) is not finite.

    Parameters
    ----------
    outputs : what the model computed, by name (``{"logits": ..., "cam": ...}``)
    source : the checkpoint (path or hash), for the message
    """
    bad = [name for name, value in outputs.items() if not _all_finite(value)]
    if bad:
        raise DataError(
            f"{source}: the model computes NaN or inf ({', '.join(bad)}) on the images given; "
            f"{RETRAIN_HINT}. Nothing was written from it"
        )


def check_finite_weights(model: nn.Module, source: str) -> None:
    """Raise ``DataError`` naming the first parameters or buffers that hold NaN or inf."""
    bad = nonfinite_weights(model)
    if bad:
        raise DataError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or inf (first: {', '.join(bad[:3])}); "
            f"{RETRAIN_HINT}"
        )
