"""Near-duplicate grouping at pool scale: time, peak memory, recall and false merges.

Random unit vectors (the hardest case for an inverted file: no cluster structure) with planted
answers: groups of 2-4 noisy copies of one vector (cosine to the original drawn from
``--copy-cosine``, as a re-encoded, resized or slightly cropped picture) and near misses, pairs at
a cosine below the threshold (``--miss-cosine``, another photo of the same scene) that must stay
apart. Targets on 2 CPU cores: 1,000,000 x 512 in under 10 minutes and 6 GB.

    python benches/dedup_scale.py                 # full size
    python benches/dedup_scale.py --n 100000      # quick
    python benches/dedup_scale.py --n 100000 --sweep   # recall / false merges per threshold
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.vector_grouping import (  # noqa: E402
    group_by_cosine,
    grouping_quality,
    threshold_sweep,
)
from curate.neighbours.near_pairs import DEFAULT_K  # noqa: E402

TARGET_SECONDS = 600
TARGET_GB = 6.0


def noisy_copies(originals: np.ndarray, cosines: np.ndarray, rng: np.random.Generator):
    """Unit vectors whose cosine to each original is close to ``cosines`` (isotropic noise)."""
    dim = originals.shape[1]
    scale = np.sqrt((1.0 / cosines**2 - 1.0) / dim).astype(np.float32)
    copies = originals + rng.standard_normal(originals.shape, dtype=np.float32) * scale[:, None]
    return copies / np.linalg.norm(copies, axis=1, keepdims=True)


def planted_pool(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, true group label or -1, near-miss partner row or -1)."""
    rng = np.random.default_rng(args.seed)
    n, dim = args.n, args.dim
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 65_536):  # chunked: a float64 temporary would double the memory
        block = rng.standard_normal((min(65_536, n - start), dim), dtype=np.float32)
        vectors[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    sizes = rng.integers(2, 5, size=args.groups)
    n_planted = int(sizes.sum()) + 2 * args.near_misses
    if n_planted > n:
        raise SystemExit(f"--n {n} is too small for {n_planted} planted rows")
    rows = rng.permutation(n)[:n_planted]
    truth = np.full(n, -1, np.int64)
    group_rows = np.split(rows[: sizes.sum()], np.cumsum(sizes)[:-1])
    copy_rows = np.concatenate([g[1:] for g in group_rows])
    copy_of = np.concatenate([np.full(len(g) - 1, g[0]) for g in group_rows])
    cosines = rng.uniform(*args.copy_cosine, size=len(copy_rows))
    vectors[copy_rows] = noisy_copies(vectors[copy_of], cosines, rng)
    for label, g in enumerate(group_rows):
        truth[g] = label
    partner = np.full(n, -1, np.int64)
    anchors, misses = rows[sizes.sum() :].reshape(2, -1)
    cosines = rng.uniform(*args.miss_cosine, size=len(misses))
    vectors[misses] = noisy_copies(vectors[anchors], cosines, rng)
    partner[anchors], partner[misses] = misses, anchors
    return vectors, truth, partner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the pool")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--groups", type=int, help="planted duplicate groups (default: n / 50)")
    parser.add_argument("--near-misses", type=int, help="planted near-miss pairs (default: n / 50)")
    parser.add_argument("--copy-cosine", type=float, nargs=2, default=(0.96, 0.995))
    parser.add_argument("--miss-cosine", type=float, nargs=2, default=(0.80, 0.93))
    # between the planted near misses (<= 0.93) and copies (>= 0.96): recall then measures the search
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also print a threshold sweep")
    args = parser.parse_args(argv)
    args.groups = args.n // 50 if args.groups is None else args.groups
    args.near_misses = args.n // 50 if args.near_misses is None else args.near_misses

    start = time.perf_counter()
    vectors, truth, partner = planted_pool(args)
    made = time.perf_counter() - start
    keys = [f"{i:064x}" for i in range(args.n)]

    start = time.perf_counter()
    groups = group_by_cosine(vectors, keys, threshold=args.threshold, k=args.k)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux

    labels = np.where(truth >= 0, truth, -1 - np.arange(args.n))  # unplanted rows: singletons
    recall, false_merge = grouping_quality(groups.representative.to_numpy(), labels)
    rep = groups.representative.to_numpy()
    has_partner = partner >= 0
    merged_misses = int((rep[has_partner] == rep[partner[has_partner]]).sum()) // 2
    found = groups.group_size.to_numpy() > 1
    rows = [
        ("vectors", f"{args.n:,} x {args.dim}", ""),
        ("planted groups / near-miss pairs", f"{args.groups:,} / {args.near_misses:,}", ""),
        ("threshold / k", f"{args.threshold} / {args.k}", ""),
        ("make data (s)", f"{made:.1f}", ""),
        ("group_by_cosine (s)", f"{seconds:.1f}", f"< {TARGET_SECONDS}"),
        ("peak RSS (GB)", f"{peak_gb:.2f}", f"< {TARGET_GB}"),
        ("pair recall", f"{recall:.4f}", ""),
        ("pair false merges", f"{false_merge:.4f}", ""),
        ("near-miss pairs merged", f"{merged_misses:,}", "0"),
        (
            "images in found groups (planted)",
            f"{int(found.sum()):,} ({int((truth >= 0).sum()):,})",
            "",
        ),
        ("time ratio to target", f"{seconds / TARGET_SECONDS:.2f}", "< 1"),
        ("memory ratio to target", f"{peak_gb / TARGET_GB:.2f}", "< 1"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>24}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>24}  {target}")
    if args.sweep:
        print()
        sweep = threshold_sweep(vectors, keys, labels, k=args.k)
        print(sweep.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
