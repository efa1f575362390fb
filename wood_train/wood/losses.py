"""The W-OoD loss terms (WOOD_SPEC section 3) as pure, batch-vectorised functions.

One training step (``wood_train.train.train_step``) reads, top to bottom::

    x_adv = adversarial_climb(model, x_ood)                   # x' = x + eps * g / max|g|
    logits, z = model(torch.cat([x, x_adv]), with_features=True)
    bce = classification_loss(logits[:B], y)
    l_dist, stats = distance_loss(z[:B], y, distance_targets(prototypes, ood_centers))
    l_ood = ood_loss(logits[B:], id_batch_size=B, keep=keep_mask(logits[B:], ignore_classes))
    loss = bce + lambda_ * l_dist + beta * l_ood

``distance_targets`` prepares the fixed prototypes and centres once (the trainer keeps them between
refreshes). Every default below is the reference implementation's value and cites the spec
section; the trainer's config exposes each one as a field.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# WOOD_SPEC section 3: only the nearest fifth of (sample, centre) pairs is pushed away.
DEFAULT_QUANTILE = 0.2
# WOOD_SPEC section 3: step size of the climb, in normalised image space.
DEFAULT_CLIMB_EPS = 0.07
# Guards the climb's division when the input gradient is all zeros (the reference adds the same).
CLIMB_GRAD_FLOOR = 1e-12
# WOOD_SPEC section 3: "Offer both; Euclidean is the default."
METRICS = ("euclidean", "mahalanobis")
# Squared distances below this many machine epsilons of the squared norms are rounding noise of
# the expanded distance formula and count as 0 (see ``pairwise_distances``).
NOISE_ULPS = 64


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Multi-label soft margin loss on image-level labels (WOOD_SPEC section 1).

    .. math::  L_{cls} = -\frac{1}{BC} \sum_{b,c} y_{bc} \log\sigma(l_{bc})
               + (1 - y_{bc}) \log(1 - \sigma(l_{bc}))

    Parameters
    ----------
    logits : (B, C) tensor
    labels : (B, C) tensor of 0/1

    Returns
    -------
    0-dim tensor, the mean over all B*C entries.
    """
    return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))


def pairwise_distances(
    z: torch.Tensor,
    points: torch.Tensor,
    metric: str = "euclidean",
    precision: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Distances from every row of ``z`` to every row of ``points``, (B, M).

    .. math::

        d_{bm} = \sqrt{(z_b - p_m)^\top P (z_b - p_m)}
               = \sqrt{z_b^\top P z_b - 2\, z_b^\top P p_m + p_m^\top P p_m}

    with :math:`P = I` for ``"euclidean"`` and the shared precision matrix for ``"mahalanobis"``
    (only its symmetric part matters; it gets no gradient). The expanded form is one
    (B, D) x (D, M) product instead of a (B, M, D) difference tensor, which is what makes the
    loss cheap at D = 2048. The expansion's rounding noise is about
    ``eps * (|z_b|^2 + |p_m|^2)``: a squared distance below ``NOISE_ULPS`` times that counts as 0,
    with gradient 0 (never NaN). That floor is ~1e-7 of the norms in float64 and ~3e-3 of them
    in float32 (ResNet GAP features: norms ~40, class distances ~10, floor ~0.1).
    """
    return _distances(z, points, _symmetric_precision(metric, precision, z.dtype))


def _symmetric_precision(
    metric: str, precision: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    """None for Euclidean, else the symmetric part of the precision matrix (no gradient)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    if metric == "euclidean":
        return None
    if precision is None:
        raise ValueError("metric='mahalanobis' needs the shared precision matrix (D, D)")
    return ((precision + precision.T) / 2).to(dtype).detach()


def _distances(
    z: torch.Tensor, points: torch.Tensor, precision: torch.Tensor | None
) -> torch.Tensor:
    """``pairwise_distances`` with P = ``precision`` (symmetric) or the identity (None)."""
    z_p = z if precision is None else z @ precision
    points_p = points if precision is None else points @ precision
    norms = (z_p * z).sum(dim=1, keepdim=True) + (points_p * points).sum(dim=1)[None, :]  # (B, M)
    squared = torch.addmm(norms, z_p, points.T, alpha=-2)
    above_noise = squared > NOISE_ULPS * torch.finfo(squared.dtype).eps * norms.detach()
    if not squared.requires_grad:
        return torch.where(above_noise, squared, 0.0).sqrt_()
    # the inner where keeps sqrt's derivative finite where the outer one returns 0
    return torch.where(above_noise, torch.where(above_noise, squared, 1.0).sqrt(), 0.0)


def nonzero_quantile(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """The q-quantile of the non-zero entries of a non-negative tensor, interpolating linearly
    between order statistics (``torch.quantile``'s default); 0 when every entry is 0."""
    return values.new_tensor(_nonzero_quantile_value(values, quantile))


def _nonzero_quantile_value(values: torch.Tensor, quantile: float) -> float:
    # sorting puts the zeros first, so the non-zero entries are the sorted tail: no masking
    ordered = values.detach().flatten().sort().values
    zeros = 0 if float(ordered[0]) > 0 else int(torch.searchsorted(ordered, 0.0, right=True))
    count = ordered.numel() - zeros
    if count == 0:  # every feature sits on a centre: nothing to push
        return 0.0
    position = zeros + quantile * (count - 1)
    low = int(position)
    pair = ordered[low : low + 2].tolist()
    return pair[0] + (position - low) * (pair[-1] - pair[0])


@dataclass(frozen=True)
class DistanceTargets:
    r"""The prototypes and OoD centres of ``distance_loss``, prepared once for many steps.

    They stay fixed between refreshes (WOOD_SPEC section 3), so what every step would otherwise
    recompute is computed here once: the (C + K, D) stack of points :math:`p_m`, their
    precision-weighted form :math:`P p_m` (also transposed, contiguous, for the forward's matrix
    product) and their squared norms :math:`p_m^\top P p_m`. Build with ``distance_targets``.
    """

    points: torch.Tensor  # (C + K, D): mu_1 .. mu_C, nu_1 .. nu_K
    weighted: torch.Tensor  # (C + K, D): P p_m (P = the precision, or I for Euclidean)
    weighted_t: torch.Tensor  # (D, C + K): weighted.T, contiguous
    squared_norms: torch.Tensor  # (C + K,): p_m^T P p_m, without gradient
    precision: torch.Tensor | None  # symmetric (D, D), or None for Euclidean
    num_classes: int

    @property
    def metric(self) -> str:
        return "euclidean" if self.precision is None else "mahalanobis"

    def to(self, device=None, dtype=None) -> DistanceTargets:
        """The same targets on another device or in another floating dtype."""
        points = self.points.to(device=device, dtype=dtype)
        precision = self.precision
        if precision is not None:
            precision = precision.to(device=device, dtype=dtype)
        return _prepare(points, precision, self.num_classes)


def distance_targets(
    prototypes: torch.Tensor,
    ood_centers: torch.Tensor,
    metric: str = "euclidean",
    precision: torch.Tensor | None = None,
) -> DistanceTargets:
    """Prepare the class prototypes (C, D) and OoD centres (K, D) for ``distance_loss``.

    ``metric="mahalanobis"`` needs the shared ``precision`` matrix (D, D); only its symmetric
    part is used and it gets no gradient. The points are kept in float32 or wider. Gradients
    reach ``prototypes`` and ``ood_centers`` if they require them (they are fixed in training).
    """
    for name, points in (("prototypes", prototypes), ("ood_centers", ood_centers)):
        if points.ndim != 2 or points.shape[1] != prototypes.shape[-1]:
            raise ValueError(
                f"{name} must be (n, D) with D = {prototypes.shape[-1]}, got {tuple(points.shape)}"
            )
    dtype = torch.promote_types(prototypes.dtype, torch.float32)
    dim = prototypes.shape[1]
    precision = _symmetric_precision(metric, precision, dtype)
    if precision is not None and precision.shape != (dim, dim):
        raise ValueError(f"precision must be (D, D) = ({dim}, {dim}), got {tuple(precision.shape)}")
    points = torch.cat([prototypes, ood_centers]).to(dtype)
    return _prepare(points, precision, prototypes.shape[0])


def _prepare(points: torch.Tensor, precision: torch.Tensor | None, num_classes: int):
    with _autocast_off(points.device.type):
        weighted = points if precision is None else points @ precision.to(points.dtype)
        squared_norms = torch.linalg.vecdot(weighted.detach(), points.detach())
    return DistanceTargets(
        points, weighted, weighted.T.contiguous(), squared_norms, precision, num_classes
    )


def _autocast_off(device_type: str):
    enabled = torch.is_autocast_enabled(device_type)
    return torch.autocast(device_type, enabled=False) if enabled else nullcontext()


class _DistanceLoss(torch.autograd.Function):
    r"""``L_dist`` with its gradient written out: the hot path of every W-OoD step.

    Forward: squared distances :math:`s = |z|_P^2 + |p|_P^2 - 2 z^\top P p` in one matrix
    product, :math:`r = 1/\sqrt{s}` (0 where :math:`s` is rounding noise, see
    ``pairwise_distances``), :math:`d = s\,r`, and weights :math:`w` without gradient
    (:math:`+y_{bc}/BK` for the pulls, :math:`-[d^{ood}_{bk} < \tau]/BK` for the pushes), so
    :math:`L = \sum w \odot d`. Backward, with :math:`v = w\,r`:

    .. math::

        \frac{\partial L}{\partial z_b} = P z_b \sum_m v_{bm} - \sum_m v_{bm} P p_m, \qquad
        \frac{\partial L}{\partial p_m} = P p_m \sum_b v_{bm} - \sum_b v_{bm} P z_b

    one matrix product each, instead of autograd's walk through a dozen small operations.
    """

    @staticmethod
    def forward(ctx, z, labels, points, weighted, weighted_t, squared_norms, precision, num_classes, quantile):  # fmt: skip
        z_p = z if precision is None else z @ precision
        norms = torch.linalg.vecdot(z_p, z)[:, None] + squared_norms  # (B, C + K)
        squared = torch.addmm(norms, z, weighted_t, alpha=-2)
        real = squared > norms.mul_(NOISE_ULPS * torch.finfo(squared.dtype).eps)
        inverse = squared.where(real, torch.inf).rsqrt_()  # 1 / d, and 0 where d counts as 0
        distances = squared.mul_(inverse)  # d_fg | d_ood, exactly 0 where d counts as 0
        d_ood = distances[:, num_classes:]
        tau = _nonzero_quantile_value(d_ood, quantile)
        near = d_ood < tau
        # both means share the divisor B*K: mean(d_fg) * C/K = sum(y * d_fg) / (B*K)
        weights = torch.cat([labels, near.to(z.dtype).neg_()], dim=1)
        weights.mul_(1.0 / (z.shape[0] * d_ood.shape[1]))
        terms = distances * weights
        loss, pull = terms.sum(), terms[:, :num_classes].sum()
        ctx.save_for_backward(z_p, weighted, weights.mul_(inverse))
        stats = (pull, pull - loss, loss.new_tensor(tau), near.to(z.dtype).mean())
        ctx.mark_non_differentiable(*stats)
        return (loss, *stats)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, *_):
        z_p, weighted, v = ctx.saved_tensors
        v = v * grad_loss
        grad_z = grad_points = None
        if ctx.needs_input_grad[0]:
            grad_z = torch.addmm(z_p * v.sum(dim=1, keepdim=True), v, weighted, alpha=-1)
        if ctx.needs_input_grad[2]:
            grad_points = torch.addmm(weighted * v.sum(dim=0)[:, None], v.T, z_p, alpha=-1)
        return grad_z, None, grad_points, None, None, None, None, None, None


def distance_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    targets: DistanceTargets,
    quantile: float = DEFAULT_QUANTILE,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Pull ID features to their class prototypes, push them from the nearest OoD centres.

    WOOD_SPEC section 3:

    .. math::

        d^{fg}_{bc} = \|z_b - \mu_c\| \, y_{bc}, \qquad
        d^{ood}_{bk} = \|z_b - \nu_k\|

        \tau = \mathrm{quantile}_q\{ d^{ood}_{bk} : d^{ood}_{bk} \neq 0 \}
        \quad (\text{no gradient})

        L_{dist} = \frac{C}{K} \cdot \frac{1}{BC} \sum_{b,c} d^{fg}_{bc}
                 - \frac{1}{BK} \sum_{b,k} d^{ood}_{bk} [d^{ood}_{bk} < \tau]

    The quantile interpolates linearly between order statistics (as ``torch.quantile``). The
    reference takes the smallest of the top ``int(n (1 - q))`` values instead; the two push the
    same pairs at the reference's shapes (B*K = 16*50: 160 pairs) and differ by at most one pair
    otherwise. Entries equal to ``tau`` are not pushed (strict ``<``).
    A sample with no labels contributes zeros to the first mean (it still counts in ``B*C``).
    Distances are computed in float32 or wider with autocast off (bf16 would drown them in
    rounding noise), so the loss can be called inside an autocast region. The gradient is
    written out (``_DistanceLoss``, one matrix product); it reaches ``z``, and the prototypes
    and centres when they require it, not the precision matrix, and cannot be differentiated
    twice.

    Parameters
    ----------
    z : (B, D) tensor
        GAP features of the ID batch (``model.forward_features(x)[1]``).
    labels : (B, C) tensor of 0/1
    targets : DistanceTargets
        ``distance_targets(prototypes, ood_centers, metric, precision)``: the class prototypes
        :math:`\mu_c` and the K-means centres :math:`\nu_k` of the hard-OoD features, with the
        metric (``"mahalanobis"`` measures :math:`\sqrt{(z-m)^\top P (z-m)}`).
    quantile : float
        q in (0, 1]; reference default 0.2.

    Returns
    -------
    loss : 0-dim tensor
    stats : dict of detached 0-dim tensors, for logging
        ``pull`` = mean(d_fg) * C/K and ``push`` = mean(d_ood [d_ood < tau]) (loss = pull - push),
        ``tau``, and ``pushed_fraction`` (the share of the B*K pairs below tau).

    Examples
    --------
    >>> targets = distance_targets(prototypes, ood_centers)  # once per refresh  # doctest: +SKIP
    >>> loss, stats = distance_loss(z, y, targets)  # doctest: +SKIP
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    num_classes = targets.num_classes
    if z.ndim != 2 or z.shape[1] != targets.points.shape[1]:
        raise ValueError(
            f"z must be (B, D) GAP features with D = {targets.points.shape[1]}, "
            f"got shape {tuple(z.shape)}"
        )
    if labels.shape != (z.shape[0], num_classes):
        raise ValueError(
            f"labels must be (B, C) = ({z.shape[0]}, {num_classes}) to match z and the "
            f"prototypes, got {tuple(labels.shape)}"
        )
    # the expanded distances need at least float32: no bf16/fp16, even under autocast
    dtype = torch.promote_types(z.dtype, torch.float32)
    if targets.points.dtype != dtype or targets.points.device != z.device:
        targets = targets.to(z.device, dtype)
    with _autocast_off(z.device.type):
        loss, pull, push, tau, pushed = _DistanceLoss.apply(
            z.to(dtype), labels.to(dtype), targets.points, targets.weighted, targets.weighted_t,
            targets.squared_norms, targets.precision, num_classes, quantile,
        )  # fmt: skip
    return loss, {"pull": pull, "push": push, "tau": tau, "pushed_fraction": pushed}


def adversarial_climb(
    model: nn.Module, x_ood: torch.Tensor, eps: float = DEFAULT_CLIMB_EPS
) -> torch.Tensor:
    r"""One gradient-ascent step on the OoD images toward their most confident class.

    WOOD_SPEC section 3:

    .. math::

        g = \nabla_x \sum_b \max_c f(x)_{bc}, \qquad
        x' = \mathrm{clamp}\big(x + \epsilon \, g / (\max |g| + 10^{-12}),
             \min x, \max x\big)

    As in the reference, ``max |g|`` and the clamp bounds ``min x`` / ``max x`` are taken over the
    whole batch tensor (one scalar each), not per image, so images whose gradient is small move
    less. Only the input gets a gradient (``torch.autograd.grad``); no parameter ``.grad`` is
    touched and the model's train/eval mode is left as it is (the reference climbs in train mode).
    BatchNorm layers that train (not W-OoD's frozen ones) get their running statistics back, so
    the climb leaves no trace in the model. Under DDP, pass the unwrapped ``model.module``: the
    climb is local to each process and must not start a gradient all-reduce.

    Parameters
    ----------
    model : module returning (B, C) logits
    x_ood : (B, 3, H, W) tensor of normalised OoD images
    eps : float
        Step size in normalised image space; reference 0.07.

    Returns
    -------
    (B, 3, H, W) tensor, detached.
    """
    x = x_ood.detach().requires_grad_(True)
    running = [
        (buffer, buffer.clone())
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
        for buffer in module.buffers()
    ]
    with torch.enable_grad():
        objective = model(x).max(dim=1).values.sum()
        (grad,) = torch.autograd.grad(objective, x)
    with torch.no_grad():
        for buffer, saved in running:
            buffer.copy_(saved)
    step = eps * grad / (grad.abs().max() + CLIMB_GRAD_FLOOR)
    low, high = x_ood.min().detach(), x_ood.max().detach()
    return (x_ood.detach() + step).clamp(low, high)


def keep_mask(logits: torch.Tensor, ignore_classes: Sequence[int] = ()) -> torch.Tensor | None:
    """(B,) bool: True where the sample's top class is not in ``ignore_classes``.

    The reference drops OoD samples whose top class on the climbed image is VOC's "bottle"
    (index 4); we expose it as an option, off by default (returns None: keep all).
    """
    if not ignore_classes:
        return None
    ignore = torch.as_tensor(list(ignore_classes), device=logits.device)
    return ~torch.isin(logits.argmax(dim=1), ignore)


def ood_loss(
    logits_adv: torch.Tensor, id_batch_size: int, keep: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Push every class score of the climbed OoD images down (all-zero target).

    WOOD_SPEC section 3, with B the ID batch size:

    .. math::

        L_{ood} = \frac{1}{B} \sum_{j} m_j \cdot \frac{1}{C} \sum_c -\log(1 - \sigma(f(x'_j)_c))

    summed over the OoD batch, with :math:`m_j = 1` unless ``keep`` drops sample j. As in the
    reference, the sum is divided by the ID batch size, not the OoD batch size (and not the
    number kept): with ``--ood-batch-size`` twice ``--batch-size``, every OoD image weighs as
    much as before and the term doubles, so beta keeps its per-image meaning.

    Parameters
    ----------
    logits_adv : (B_ood, C) tensor, ``model(adversarial_climb(model, x_ood))``
    id_batch_size : int, the B of the ID batch the step trains on
    keep : (B_ood,) bool tensor, optional (see ``keep_mask``)

    Returns
    -------
    0-dim tensor
    """
    if id_batch_size <= 0:
        raise ValueError(f"id_batch_size must be positive, got {id_batch_size}")
    per_sample = F.multilabel_soft_margin_loss(
        logits_adv, torch.zeros_like(logits_adv), reduction="none"
    )
    if keep is not None:
        if keep.shape != per_sample.shape:
            raise ValueError(f"keep must be ({per_sample.shape[0]},), got {tuple(keep.shape)}")
        per_sample = per_sample * keep.to(per_sample.dtype)
    return per_sample.sum() / id_batch_size
