"""The W-OoD losses against loop transcriptions of WOOD_SPEC section 3: values and gradients."""

import math

import pytest
import torch
from torch import nn

from wood_train.model.cam_net import build_cam_net
from wood_train.wood.losses import (
    adversarial_climb,
    distance_loss,
    distance_targets,
    keep_mask,
    nonzero_quantile,
    ood_loss,
    pairwise_distances,
)

TOL = 1e-5


# ---- direct transcriptions of the spec, one scalar at a time ----------------------------------


def loop_quantile(values, q):
    """Linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


def loop_distance(a, b, metric, precision):
    diff = a - b
    if metric == "euclidean":
        squared = sum(diff[i] * diff[i] for i in range(diff.shape[0]))
    else:
        squared = diff @ precision @ diff
    return torch.sqrt(squared)


def loop_distance_loss(
    z, labels, prototypes, centers, q, metric="euclidean", precision=None, skip_zero=False
):
    """``skip_zero`` leaves out zero-distance terms (value 0, but sqrt has no derivative at 0)."""
    batch, classes, num_centers = z.shape[0], prototypes.shape[0], centers.shape[0]
    d_fg = [
        [
            loop_distance(z[b], prototypes[c], metric, precision) * labels[b, c]
            for c in range(classes)
        ]
        for b in range(batch)
    ]
    d_ood = [
        [loop_distance(z[b], centers[k], metric, precision) for k in range(num_centers)]
        for b in range(batch)
    ]
    nonzero = [float(d.detach()) for row in d_ood for d in row if float(d.detach()) != 0.0]
    tau = loop_quantile(nonzero, q) if nonzero else 0.0
    fg_sum = sum(d for row in d_fg for d in row if not (skip_zero and float(d.detach()) == 0.0))
    push_sum = sum(
        d
        for row in d_ood
        for d in row
        if float(d.detach()) < tau and not (skip_zero and float(d.detach()) == 0.0)
    )
    return fg_sum / (batch * classes) * (classes / num_centers) - push_sum / (batch * num_centers)


def loop_ood_loss(logits, id_batch_size, keep=None):
    batch, classes = logits.shape
    total = 0.0
    for b in range(batch):
        if keep is not None and not bool(keep[b]):
            continue
        per_sample = 0.0
        for c in range(classes):
            per_sample = per_sample - torch.log(1 - torch.sigmoid(logits[b, c]))
        total = total + per_sample / classes
    return total / id_batch_size


# ---- fixtures ------------------------------------------------------------------------------


def random_problem(seed, batch=5, classes=4, centers=6, dim=7):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = (torch.rand(batch, classes, generator=gen) < 0.4).double()
    labels[0] = 0.0  # a sample with no labels
    labels[1, 0] = 1.0
    prototypes = torch.randn(classes, dim, generator=gen, dtype=torch.float64)
    ood_centers = torch.randn(centers, dim, generator=gen, dtype=torch.float64)
    root = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    precision = root @ root.T / dim + torch.eye(dim, dtype=torch.float64)
    return z, labels, prototypes, ood_centers, precision


def dist(z, labels, prototypes, centers, quantile=0.2, metric="euclidean", precision=None):
    return distance_loss(
        z, labels, distance_targets(prototypes, centers, metric, precision), quantile
    )


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=TOL, atol=TOL)


# ---- distance -----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["euclidean", "mahalanobis"])
@pytest.mark.parametrize("quantile", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_distance_loss_matches_loop_values_and_gradients(metric, quantile, seed):
    z, labels, prototypes, centers, precision = random_problem(seed)
    prototypes.requires_grad_(True)
    centers.requires_grad_(True)
    p = precision if metric == "mahalanobis" else None
    ours, stats = dist(z, labels, prototypes, centers, quantile, metric, p)
    ref = loop_distance_loss(z, labels, prototypes, centers, quantile, metric, precision)
    assert_close(ours, ref)
    inputs = (z, prototypes, centers)
    for got, want in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(ref, inputs)):
        assert_close(got, want)
    pairs = z.shape[0] * centers.shape[0]
    assert abs(stats["pushed_fraction"].item() - quantile) <= 1 / pairs + 1e-6


@pytest.mark.parametrize("metric", ["euclidean", "mahalanobis"])
def test_pairwise_distances_match_loop_with_gradients(metric):
    z, _, prototypes, _, precision = random_problem(6)
    z = z.detach().clone()
    z[0] = prototypes[1]  # one zero distance: value 0, gradient 0
    z.requires_grad_(True)
    ours = pairwise_distances(z, prototypes, metric, precision)
    ref = torch.stack(
        [
            torch.stack([loop_distance(z[b], p, metric, precision) for p in prototypes])
            for b in range(5)
        ]
    )
    assert_close(ours, ref)
    assert ours[0, 1].item() == 0.0
    weights = torch.rand(ours.shape, dtype=ours.dtype)
    weights[0, 1] = 0.0  # the loop's sqrt has no derivative at 0; ours gives 0 there
    (got,) = torch.autograd.grad((ours * weights).sum(), z)
    (want,) = torch.autograd.grad((ref * weights).nan_to_num().sum(), z)
    assert torch.isfinite(got).all()
    assert_close(got[1:], want[1:])


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.77, 1.0])
def test_nonzero_quantile_skips_zeros(quantile):
    values = torch.tensor([[0.0, 3.0, 1.0, 0.0], [4.0, 0.0, 2.0, 5.0]])
    expected = loop_quantile([3.0, 1.0, 4.0, 2.0, 5.0], quantile)
    assert nonzero_quantile(values, quantile).item() == pytest.approx(expected)
    assert nonzero_quantile(torch.zeros(2, 3), quantile).item() == 0.0


def test_distance_loss_float32_d2048_matches_float64_loop():
    """Post-ReLU-like features at the reference's width, one of them exactly on a prototype and
    one on a centre: float32 against the float64 loop."""
    z, labels, prototypes, centers, _ = random_problem(3, batch=4, classes=3, centers=5, dim=2048)
    z, prototypes, centers = (2 * t.detach().abs() for t in (z, prototypes, centers))
    labels[1, 0] = 1.0
    z[1], z[2] = prototypes[0], centers[3]
    z32 = z.float().requires_grad_(True)
    ours, _ = dist(z32, labels.float(), prototypes.float(), centers.float(), 0.5)
    z64 = z.clone().requires_grad_(True)
    ref = loop_distance_loss(z64, labels, prototypes, centers, 0.5, skip_zero=True)
    assert abs(ours.item() - ref.item()) <= TOL * max(1.0, abs(ref.item()))
    (got,) = torch.autograd.grad(ours, z32)
    (want,) = torch.autograd.grad(ref, z64)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=TOL * want.abs().max().item())


def test_distance_loss_under_bf16_autocast_keeps_float32_precision():
    z, labels, prototypes, centers, _ = random_problem(4, batch=4, classes=3, centers=5, dim=256)
    z, prototypes, centers = (2 * t.detach().abs().float() for t in (z, prototypes, centers))
    plain, _ = dist(z, labels.float(), prototypes, centers)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, _ = dist(z, labels, prototypes, centers)
        cast_input, _ = dist(z.bfloat16(), labels, prototypes, centers)
    assert autocast.dtype == torch.float32
    assert_close(autocast, plain)
    # a bf16 feature is itself rounded; the loss on it is exact for that rounded input
    assert_close(cast_input, dist(z.bfloat16().float(), labels, prototypes, centers)[0])


def test_distance_loss_tie_at_tau_pushes_nothing():
    # one 1-d sample at 0; centres at 1, 1, 2, 3, 4; one prototype at 3.
    z = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    labels = torch.ones(1, 1, dtype=torch.float64)
    prototypes = torch.tensor([[3.0]], dtype=torch.float64)
    centers = torch.tensor([[1.0], [1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    # q = 0.2: position 0.8 between the tied 1s, tau = 1, nothing strictly below: L = 3 * 1/5
    loss, stats = dist(z, labels, prototypes, centers, quantile=0.2)
    assert loss.item() == pytest.approx(0.6)
    assert stats["tau"].item() == pytest.approx(1.0)
    assert stats["pushed_fraction"].item() == 0.0
    # q = 0.5: tau = 2 (exactly an entry): the two 1s are pushed, the 2 is not: L = 0.6 - 2/5
    loss, stats = dist(z, labels, prototypes, centers, quantile=0.5)
    assert loss.item() == pytest.approx(0.2)
    assert stats["pull"].item() == pytest.approx(0.6) and stats["push"].item() == pytest.approx(0.4)
    assert stats["pushed_fraction"].item() == pytest.approx(2 / 5)
    assert_close(loss, loop_distance_loss(z, labels, prototypes, centers, 0.5))
    (grad,) = torch.autograd.grad(loss, z)
    # d/dz [|z-3|/5 - (|z-1| + |z-1|)/5] at z = 0: (-1 + 2)/5
    assert grad.item() == pytest.approx(0.2)


@pytest.mark.parametrize("metric", ["euclidean", "mahalanobis"])
def test_distance_loss_feature_on_a_centre_has_finite_gradient(metric):
    z, labels, prototypes, centers, precision = random_problem(5)
    p = precision if metric == "mahalanobis" else None
    z = z.detach().clone()
    z[1] = prototypes[0]  # labelled with class 0: zero pull distance
    z[2] = centers[3]  # zero push distance, excluded from the quantile
    z.requires_grad_(True)
    loss, _ = dist(z, labels, prototypes, centers, 0.5, metric, p)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(grad).all()
    assert_close(loss, loop_distance_loss(z, labels, prototypes, centers, 0.5, metric, precision))
    # subgradient 0 at distance 0: the loop with the zero-distance terms left out gives the same
    # value and gradient
    z_ref = z.detach().clone().requires_grad_(True)
    ref = loop_distance_loss(z_ref, labels, prototypes, centers, 0.5, metric, precision, True)
    assert_close(loss, ref)
    assert_close(torch.autograd.grad(ref, z_ref)[0], grad)


def test_distance_loss_all_on_centres_pushes_nothing():
    centers = torch.randn(3, 4, dtype=torch.float64)
    z = centers[[0, 0]].clone().requires_grad_(True)
    centers_same = centers[[0]].clone()
    labels = torch.zeros(2, 2, dtype=torch.float64)
    loss, stats = dist(z, labels, torch.randn(2, 4, dtype=torch.float64), centers_same)
    assert loss.item() == 0.0
    assert stats["tau"].item() == 0.0
    assert torch.isfinite(torch.autograd.grad(loss, z)[0]).all()


def test_distance_loss_rejects_bad_shapes_and_metric():
    z, labels, prototypes, centers, precision = random_problem(0)
    with pytest.raises(ValueError, match="labels must be"):
        dist(z, labels[:, :2], prototypes, centers)
    with pytest.raises(ValueError, match="ood_centers must be"):
        dist(z, labels, prototypes, centers[:, :3])
    with pytest.raises(ValueError, match="unknown metric"):
        dist(z, labels, prototypes, centers, metric="cosine")
    with pytest.raises(ValueError, match="needs the shared precision"):
        dist(z, labels, prototypes, centers, metric="mahalanobis")
    with pytest.raises(ValueError, match="quantile"):
        dist(z, labels, prototypes, centers, quantile=0.0)


# ---- adversarial climb ---------------------------------------------------------------------


class LinearScores(nn.Module):
    """f(x)_c = <W_c, x>: the input gradient of max_c f is the winning row of W, known by hand."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def test_adversarial_climb_planted_linear_model():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2, 2, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    model = LinearScores(weight)
    eps = 0.07
    x_adv = adversarial_climb(model, x, eps=eps)
    winners = (x.flatten(1) @ weight.T).argmax(dim=1)
    grad = weight[winners].reshape(x.shape)
    scale = max(abs(v) for v in grad.flatten().tolist())
    expected = torch.clamp(x + eps * grad / (scale + 1e-12), x.min().item(), x.max().item())
    assert_close(x_adv, expected)
    assert x_adv.min() >= x.min() and x_adv.max() <= x.max()
    assert model.weight.grad is None


def test_adversarial_climb_matches_per_sample_loop_on_cam_net():
    torch.manual_seed(0)
    model = build_cam_net("resnet18", num_classes=3, output_stride=16, frozen_bn=True).double()
    model.train()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    x_adv = adversarial_climb(model, x, eps=0.07)
    grads = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1].clone().requires_grad_(True)
        model(xb)[0].max().backward()
        grads.append(xb.grad[0])
    model.zero_grad(set_to_none=True)
    grad = torch.stack(grads)
    scale = max(float(g.abs().max()) for g in grads)
    expected = torch.clamp(x + 0.07 * grad / (scale + 1e-12), float(x.min()), float(x.max()))
    assert_close(x_adv, expected)


@pytest.mark.parametrize("train_mode", [True, False])
def test_adversarial_climb_leaves_mode_and_parameter_grads_alone(train_mode):
    torch.manual_seed(1)
    model = build_cam_net("resnet18", num_classes=3, output_stride=16, frozen_bn=True)
    model.train(train_mode)
    modes = [m.training for m in model.modules()]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # works even when the caller disabled gradients
        x_adv = adversarial_climb(model, x)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert not x_adv.requires_grad
    assert not torch.equal(x_adv, x)
    # the climb raises the top score
    with torch.no_grad():
        assert model(x_adv).max(1).values.sum() > model(x).max(1).values.sum()


def test_adversarial_climb_restores_trainable_batchnorm_statistics():
    torch.manual_seed(2)
    model = build_cam_net("resnet18", num_classes=3, output_stride=16, frozen_bn=False).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adversarial_climb(model, torch.randn(2, 3, 32, 32) * 3 + 1)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model(torch.randn(2, 3, 32, 32) * 3 + 1)  # a plain forward does move them: the check can fail
    assert not torch.equal(before["stem.1.running_mean"], model.state_dict()["stem.1.running_mean"])


def test_adversarial_climb_zero_gradient_keeps_images():
    model = LinearScores(torch.zeros(2, 12, dtype=torch.float64))
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    assert torch.equal(adversarial_climb(model, x), x)


# ---- OoD term ------------------------------------------------------------------------------


@pytest.mark.parametrize("id_batch_size", [6, 3])
def test_ood_loss_matches_loop_values_and_gradients(id_batch_size):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    keep = torch.tensor([True, False, True, True, False, True])
    for mask in (None, keep):
        ours = ood_loss(logits, id_batch_size, keep=mask)
        ref = loop_ood_loss(logits, id_batch_size, keep=mask)
        assert_close(ours, ref)
        assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0])


def test_ood_loss_divides_by_the_id_batch_size_as_the_reference():
    logits = torch.zeros(4, 3)
    keep = torch.tensor([True, False, True, False])
    # each kept sample costs log 2 at zero logits; two of four kept, divided by the ID batch B
    assert ood_loss(logits, 4, keep).item() == pytest.approx(math.log(2) * 2 / 4)
    assert ood_loss(logits, 2, keep).item() == pytest.approx(math.log(2) * 2 / 2)
    # an OoD batch twice the ID batch: every OoD image weighs 1/B, so the term doubles
    assert ood_loss(torch.zeros(8, 3), 4).item() == pytest.approx(2 * ood_loss(logits, 4).item())
    assert ood_loss(logits, 4, torch.zeros(4, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="id_batch_size"):
        ood_loss(logits, 0)


def test_keep_mask_drops_ignored_top_classes():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0], [0.0, 1.0, 2.0], [0.0, 1.0, 1.0]])
    assert keep_mask(logits, ()) is None
    # a tie resolves to the first maximal index (torch.argmax): the last row's top class is 1
    assert keep_mask(logits, [1]).tolist() == [False, True, True, False]
    assert keep_mask(logits, [1, 2]).tolist() == [False, True, False, False]
    assert keep_mask(logits, [0]).tolist() == [True, False, True, True]
