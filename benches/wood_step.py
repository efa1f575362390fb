"""What W-OoD costs per step, and what the vectorised distance loss saves.

(a) One W-OoD step against one baseline step, both run by the trainer's own ``train_step`` (the
    code ``hardood train`` runs): W-OoD = adversarial climb on the OoD batch + one forward over the
    ID and climbed OoD batches + BCE + distance loss + OoD loss + backward + divergence check +
    SGD step; baseline = ID forward + BCE + backward + divergence check + step. Same model, same
    batch, interleaved in one run. Target: W-OoD <= 2.5x the baseline.
(b) ``distance_loss`` forward + backward against two loop transcriptions of WOOD_SPEC section 3 at
    C=20, K=50, B=16, D=2048: one Python iteration per class and per centre (each vectorised over
    the batch, as the reference's distance code is written), and one per (sample, class/centre)
    pair. ``distance_loss`` runs as in training, on targets prepared once per refresh
    (``distance_targets``); a second row prepares them in every call. The vectorised loss must be
    at least 10x faster than the per-class loop.

Usage::

    python -m benches.wood_step --threads 1          # resnet18 at 64 px, from the repo root
    python -m benches.wood_step --threads 1 --clock cpu   # on a shared machine, see below
    python -m benches.wood_step --backbone resnet50 --size 224

``--clock wall`` (default) times calls with ``time.perf_counter``. On a machine shared with other
jobs, ``--clock cpu`` (one CPU thread only) times the thread's CPU time instead, which leaves out
the time other processes hold the core; an idle machine's wall-clock times lie close to it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch

from wood_train import config as cfg
from wood_train.model.cam_net import BACKBONES, build_cam_net
from wood_train.train import train_step
from wood_train.train_config import PRESETS
from wood_train.wood.losses import DEFAULT_QUANTILE, distance_loss, distance_targets

# WOOD_SPEC section 3 reference defaults (the voc12 preset: lambda 0.007, beta 0.25, q, eps)
NUM_CLASSES = 20
NUM_CENTERS = 50
BATCH = 16
FEATURE_DIM = 2048
REQUIRED_SPEEDUP = 10.0
MAX_STEP_RATIO = 2.5
LEARNING_RATE = 1e-3  # small, so that repeated steps on one batch stay finite
LOSS_CALLS_PER_ROUND = 10  # the loss is ~1000x cheaper than a step: time blocks of calls


def timed_calls(
    fn: Callable[[], object], calls: int, device: str, clock=time.perf_counter
) -> list[float]:
    """Seconds of each of ``calls`` consecutive calls (a GPU is synchronised around each)."""
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    seconds = []
    for _ in range(calls):
        synchronize()
        start = clock()
        fn()
        synchronize()
        seconds.append(clock() - start)
    return seconds


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    calls: int,
    warmup: int,
    device: str,
    clock=time.perf_counter,
) -> dict[str, tuple[float, float]]:
    """Best and median seconds of one call of each function.

    Each round runs ``calls`` consecutive calls of every function in turn (warm caches for all,
    and load from other work on a shared machine hits all of them alike). The best call is the
    one least disturbed by that load (``timeit``'s advice); the median shows how much it moved.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    # as timeit: no cyclic garbage collection while timing
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, fn in fns.items():
                samples[name] += timed_calls(fn, calls, device, clock)
    finally:
        gc.enable()
    return {name: (min(values), statistics.median(values)) for name, values in samples.items()}


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


# ---- (a) one training step ------------------------------------------------------------------


def step_benchmark(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_cam_net(args.backbone, num_classes=NUM_CLASSES, output_stride=16, frozen_bn=True)
    model.to(args.device).train()
    backbone_params, classifier_params = model.parameter_groups(freeze_stem=True)
    optimizer = torch.optim.SGD(
        [{"params": backbone_params}, {"params": classifier_params}], lr=LEARNING_RATE
    )
    config = cfg.replace(PRESETS["voc12"], lr=LEARNING_RATE, batch_size=args.batch,
                         ood_batch_size=args.batch)  # fmt: skip
    shape = (args.batch, 3, args.size, args.size)
    x, x_ood = torch.randn(shape, device=args.device), torch.randn(shape, device=args.device)
    y = (torch.rand(args.batch, NUM_CLASSES, device=args.device) < 0.15).float()
    y[:, 0] = 1.0
    with torch.no_grad():
        _, z = model.forward_features(x)
    dim = model.feature_dim
    prototypes = z.mean(0) + 0.1 * torch.randn(NUM_CLASSES, dim, device=args.device)
    ood_centers = z.mean(0) + 0.1 * torch.randn(NUM_CENTERS, dim, device=args.device)
    # what train_step reads from the W-OoD state (wood_train.wood.objective.WoodObjective)
    wood = SimpleNamespace(targets=distance_targets(prototypes, ood_centers), ignore=[])

    def baseline_step() -> None:
        train_step(model, model, optimizer, x, y, None, None, config, step=1)

    def wood_step() -> None:
        train_step(model, model, optimizer, x, y, x_ood, wood, config, step=1)

    return interleaved_times(
        {"baseline step": baseline_step, "W-OoD step": wood_step},
        args.repeats,
        1,
        args.warmup,
        args.device,
        CLOCKS[args.clock],
    )


# ---- (b) distance loss ----------------------------------------------------------------------


def distance_per_class_loop(z, labels, prototypes, ood_centers, quantile):
    """One iteration per class and per centre, each over the whole batch."""
    d_fg = torch.stack(
        [((z - prototypes[c]) ** 2).sum(1).sqrt() for c in range(prototypes.shape[0])], 1
    )
    d_fg = d_fg * labels
    d_ood = torch.stack(
        [((z - ood_centers[k]) ** 2).sum(1).sqrt() for k in range(ood_centers.shape[0])], 1
    )
    nonzero = d_ood.detach()[d_ood.detach() != 0]
    tau = torch.quantile(nonzero, quantile)
    scale = prototypes.shape[0] / ood_centers.shape[0]
    return d_fg.mean() * scale - (d_ood * (d_ood.detach() < tau)).mean()


def distance_per_pair_loop(z, labels, prototypes, ood_centers, quantile):
    """One iteration per (sample, class) and per (sample, centre) pair."""
    batch, num_classes, num_centers = z.shape[0], prototypes.shape[0], ood_centers.shape[0]
    d_fg = torch.stack(
        [
            torch.stack(
                [torch.linalg.vector_norm(z[b] - prototypes[c]) for c in range(num_classes)]
            )
            for b in range(batch)
        ]
    )
    d_fg = d_fg * labels
    d_ood = torch.stack(
        [
            torch.stack(
                [torch.linalg.vector_norm(z[b] - ood_centers[k]) for k in range(num_centers)]
            )
            for b in range(batch)
        ]
    )
    nonzero = d_ood.detach()[d_ood.detach() != 0]
    tau = torch.quantile(nonzero, quantile)
    return d_fg.mean() * (num_classes / num_centers) - (d_ood * (d_ood.detach() < tau)).mean()


def distance_benchmark(args: argparse.Namespace) -> tuple[dict[str, float], float]:
    gen = torch.Generator().manual_seed(0)
    # post-ReLU-like GAP features
    z0 = torch.randn(BATCH, FEATURE_DIM, generator=gen).abs().to(args.device)
    labels = (torch.rand(BATCH, NUM_CLASSES, generator=gen) < 0.15).float().to(args.device)
    prototypes = torch.randn(NUM_CLASSES, FEATURE_DIM, generator=gen).abs().to(args.device)
    ood_centers = torch.randn(NUM_CENTERS, FEATURE_DIM, generator=gen).abs().to(args.device)

    targets = distance_targets(prototypes, ood_centers)  # as training: once per refresh

    def ours(z, labels, prototypes, ood_centers, quantile):
        return distance_loss(z, labels, targets, quantile)[0]

    def ours_unprepared(z, labels, prototypes, ood_centers, quantile):
        return distance_loss(z, labels, distance_targets(prototypes, ood_centers), quantile)[0]

    def run(fn):
        def forward_backward():
            z = z0.clone().requires_grad_(True)
            loss = fn(z, labels, prototypes, ood_centers, DEFAULT_QUANTILE)
            loss.backward()
            return loss.detach(), z.grad

        return forward_backward

    fns = {
        "distance_loss (vectorised)": run(ours),
        "  + distance_targets each call": run(ours_unprepared),
        "per-class/centre loop": run(distance_per_class_loop),
        "per-pair loop": run(distance_per_pair_loop),
    }
    # the three agree before they are timed
    results = {name: fn() for name, fn in fns.items()}
    reference_loss, reference_grad = results["per-pair loop"]
    for name, (loss, grad) in results.items():
        assert torch.allclose(loss, reference_loss, rtol=1e-4), name
        assert torch.allclose(grad, reference_grad, rtol=1e-3, atol=1e-7), name
    times = interleaved_times(
        fns, args.repeats, LOSS_CALLS_PER_ROUND, args.warmup, args.device, CLOCKS[args.clock]
    )
    return times, times["per-class/centre loop"][0] / times["distance_loss (vectorised)"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", choices=BACKBONES)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=BATCH, help="ID and OoD batch size")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall",
        help="wall: elapsed time; cpu: this thread's CPU time (CPU, --threads 1 only)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock cpu measures one thread: use it with --threads 1 --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"device {args.device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; "
        f"{args.clock} clock; best and median call of {args.repeats} interleaved rounds "
        f"(a round: 1 step, or {LOSS_CALLS_PER_ROUND} loss calls, of each implementation)"
    )
    steps = step_benchmark(args)
    base = steps["baseline step"][0]
    print(
        f"\n(a) one step, {args.backbone} at {args.size} px, "
        f"ID batch {args.batch} + OoD batch {args.batch}"
    )
    print(f"{'step':<28}{'best ms':>10}{'median ms':>11}{'x baseline':>12}")
    for name, (best, median) in steps.items():
        print(f"{name:<28}{best * 1e3:>10.1f}{median * 1e3:>11.1f}{best / base:>12.2f}")
    ratio = steps["W-OoD step"][0] / base
    verdict = "ok" if ratio <= MAX_STEP_RATIO else "ABOVE TARGET"
    print(
        f"W-OoD step / baseline step (best of runs): {ratio:.2f}x "
        f"(target <= {MAX_STEP_RATIO}x: {verdict})"
    )

    losses, speedup = distance_benchmark(args)
    ours = losses["distance_loss (vectorised)"][0]
    print(
        f"\n(b) distance loss forward+backward, "
        f"C={NUM_CLASSES} K={NUM_CENTERS} B={BATCH} D={FEATURE_DIM}"
    )
    print(f"{'implementation':<28}{'best ms':>10}{'median ms':>11}{'x ours':>12}")
    for name, (best, median) in losses.items():
        print(f"{name:<28}{best * 1e3:>10.3f}{median * 1e3:>11.3f}{best / ours:>12.1f}")
    verdict = "ok" if speedup >= REQUIRED_SPEEDUP else "BELOW TARGET"
    print(
        f"\nspeedup over the per-class/centre loop (best of runs): {speedup:.1f}x "
        f"(target >= {REQUIRED_SPEEDUP:.0f}x: {verdict})"
    )


if __name__ == "__main__":
    main()
