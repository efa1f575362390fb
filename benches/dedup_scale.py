"""The queue's near-duplicate step at pool scale: time, peak memory, recall and false merges.

Times ``curate.neighbours.near_duplicates.group_near_duplicates``, the function ``build_queue``
calls, on what scoring stores for each image: the 6 x 6 thumbnail descriptor (float16 memory map,
the ``thumb6`` file of a new store) for the candidate search and the 16 x 16 confirmation thumbnail
(uint8 memory map, ``confirm16``) for the confirmation. Both files are written to ``--work-dir``
first, in the store's own formats, and read back as memory maps, so neither has to fit in RAM.

The pool is synthetic with planted answers. Background pictures come from shared scene layouts
(``--scenes``; several pictures per layout, so many thumbnail pairs are close enough to be checked
and must then be rejected: 0.6 candidate pairs per image, the default world's rate), and the planted rows are 64-pixel pictures put through the world's
near-duplicate transforms: groups of 2-4 copies (JPEG quality 60-90, 0.8-1.25x resizes, 3-8%
crops) that must be grouped, and near-miss pairs (another picture of the same layout) that must
stay apart. Descriptors and thumbnails of planted rows come from the library's own functions on
the full pictures. Targets on 2 CPU cores: 1M under 5 minutes; 10M under 60 minutes and 8 GB;
recall >= 0.95, false merges <= 1%. The 8 GB is the process's own (anonymous) memory; peak RSS is
printed beside it and also counts the pages of the two memory maps it has read, page cache that
the kernel drops under memory pressure.

    python benches/dedup_scale.py --n 1000000       # about 1 GB of disk in --work-dir
    python benches/dedup_scale.py --n 10000000      # about 10 GB of disk in --work-dir
    python benches/dedup_scale.py --n 100000        # quick
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.peak_memory import AnonymousPeak  # noqa: E402
from benches.vector_grouping import grouping_quality  # noqa: E402
from curate.neighbours.near_duplicates import (  # noqa: E402
    CONFIRM_DIM,
    CONFIRM_SIDE,
    DEFAULT_DUP_CANDIDATE_THRESHOLD,
    DEFAULT_DUP_THRESHOLD,
    THUMB_DESCRIPTOR_SIDE,
    THUMB_DIM,
    confirmation_thumbnail,
    group_near_duplicates,
    thumbnail_descriptor,
)
from wood_train.progress import progress  # noqa: E402

TARGETS = {1_000_000: (300, None), 10_000_000: (3600, 8.0)}  # n -> (seconds, GB)
CHUNK = 16_384
SOURCE_SIDE = 64
# detail on top of a scene's layout: at 31 grey levels, thumbnail candidates come at the default
# world's rate (0.6 candidate pairs per image, 717 among its 1,200), a third of the images sit in
# one, and nearly all of them must be rejected by the confirmation
DETAIL = 31.0


def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) exact area-averaging weights (what PIL's BOX filter computes)."""
    out = np.zeros((dst, src))
    for d in range(dst):
        lo, hi = d * src / dst, (d + 1) * src / dst
        for s in range(int(lo), int(np.ceil(hi))):
            out[d, s] = min(hi, s + 1) - max(lo, s)
    return out / out.sum(axis=1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _upsample(grid: np.ndarray, side: int) -> np.ndarray:
    """(B, g, g, 3) -> (B, side, side, 3) bilinear, via two small matrices."""
    g = grid.shape[1]
    pos = np.clip((np.arange(side) + 0.5) * g / side - 0.5, 0, g - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, g - 1)
    m = np.zeros((side, g))
    m[np.arange(side), low] += 1 - (pos - low)
    m[np.arange(side), high] += pos - low
    return _separable(m, grid)


def _separable(m: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(B, g, g, C) -> (B, s, s, C) with out[b, y, x] = sum m[y, i] grid[b, i, j] m[x, j].

    Two matrix products (BLAS); a plain einsum over the four indices runs as one slow loop."""
    planes = np.moveaxis(grid, -1, 1)  # (B, C, g, g)
    return np.moveaxis(m @ planes @ m.T, 1, -1)


class ScenePictures:
    """Pictures as scene layout (4 x 4 colours) + detail (8 x 8) + fine texture."""

    def __init__(self, n_scenes: int, seed: int):
        self.layouts = np.random.default_rng(seed).uniform(30, 225, (n_scenes, 4, 4, 3))

    def pictures(self, scenes: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
        layout = _upsample(self.layouts[scenes], side)
        detail = _upsample(rng.normal(0, DETAIL, (len(scenes), 8, 8, 3)), side)
        texture = rng.normal(0, 6, (len(scenes), side, side, 3))
        return np.clip(layout + detail + texture, 0, 255).astype(np.uint8)


def _copy_of(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the world's near-duplicate transforms: JPEG re-encode, resize or crop."""
    image = Image.fromarray(picture)
    kind = rng.integers(3)
    if kind == 0:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(60, 91)))
        return np.asarray(Image.open(buffer).convert("RGB"))
    if kind == 1:
        side = int(SOURCE_SIDE * rng.uniform(0.8, 1.25))
        return np.asarray(image.resize((side, side), Image.BILINEAR))
    crop = rng.uniform(0.03, 0.08)
    keep = int(round(SOURCE_SIDE * (1 - crop)))
    y, x = rng.integers(0, SOURCE_SIDE - keep + 1, size=2)
    return np.ascontiguousarray(picture[y : y + keep, x : x + keep])


def write_pool(args, folder: Path):
    """Write the two memory-mapped files; returns (descriptors, thumbnails, truth, partner)."""
    n = args.n
    rng = np.random.default_rng(args.seed)
    scenes = ScenePictures(args.scenes, args.seed)
    desc = np.lib.format.open_memmap(folder / "thumb6.npy", "w+", np.float16, (n, THUMB_DIM))
    thumbs = np.lib.format.open_memmap(folder / "confirm16.npy", "w+", np.uint8, (n, CONFIRM_DIM))
    box = _area_matrix(CONFIRM_SIDE, THUMB_DESCRIPTOR_SIDE)
    bar = progress(total=n, desc="backgrounds", unit="img")
    for start in range(0, n, CHUNK):  # backgrounds, drawn at thumbnail size in bulk
        count = min(CHUNK, n - start)
        small = scenes.pictures(rng.integers(0, args.scenes, count), rng, CONFIRM_SIDE)
        thumbs[start : start + count] = small.reshape(count, -1)
        tiny = _separable(box, small.astype(np.float64))
        desc[start : start + count] = _unit(tiny.reshape(count, -1))
        bar.update(count)
    bar.close()
    sizes = rng.integers(2, 5, size=args.groups)
    n_planted = int(sizes.sum()) + 2 * args.near_misses
    if n_planted > n:
        raise SystemExit(f"--n {n} is too small for {n_planted} planted rows")
    rows = rng.permutation(n)[:n_planted]
    truth = np.full(n, -1, np.int64)
    partner = np.full(n, -1, np.int64)
    group_rows = np.split(rows[: sizes.sum()], np.cumsum(sizes)[:-1])
    bar = progress(total=n_planted, desc="planted copies and near misses", unit="img")
    for first in range(0, len(group_rows), CHUNK // 16):
        chunk = group_rows[first : first + CHUNK // 16]
        sources = scenes.pictures(rng.integers(0, args.scenes, len(chunk)), rng, SOURCE_SIDE)
        for label, members, source in zip(range(first, first + len(chunk)), chunk, sources):
            truth[members] = label
            pictures = [source] + [_copy_of(source, rng) for _ in members[1:]]
            for row, picture in zip(members, pictures):
                desc[row] = thumbnail_descriptor(picture)
                thumbs[row] = confirmation_thumbnail(picture)
            bar.update(len(members))
    anchors, misses = rows[sizes.sum() :].reshape(2, -1)
    miss_scenes = rng.integers(0, args.scenes, len(anchors))
    for a, m, scene in zip(anchors, misses, miss_scenes):  # two pictures of one layout
        for row, picture in zip(
            (a, m), scenes.pictures(np.array([scene, scene]), rng, SOURCE_SIDE)
        ):
            desc[row] = thumbnail_descriptor(picture)
            thumbs[row] = confirmation_thumbnail(picture)
        bar.update(2)
    bar.close()
    partner[anchors], partner[misses] = misses, anchors
    desc.flush()
    thumbs.flush()
    del desc, thumbs
    return truth, partner


def _write(args, folder: Path) -> None:
    truth, partner = write_pool(args, folder)
    np.save(folder / "truth.npy", truth)
    np.save(folder / "partner.npy", partner)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="images in the pool")
    parser.add_argument("--groups", type=int, help="planted duplicate groups (default: n / 50)")
    parser.add_argument("--near-misses", type=int, help="planted near-miss pairs (default: n / 50)")
    parser.add_argument("--scenes", type=int, help="scene layouts (default: n / 20)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_DUP_THRESHOLD)
    parser.add_argument(
        "--candidate-threshold", type=float, default=DEFAULT_DUP_CANDIDATE_THRESHOLD
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/benches/dedup_scale"))
    parser.add_argument("--keep", action="store_true", help="keep the memory-mapped files")
    args = parser.parse_args(argv)
    args.groups = args.n // 50 if args.groups is None else args.groups
    args.near_misses = args.n // 50 if args.near_misses is None else args.near_misses
    args.scenes = max(1, args.n // 20) if args.scenes is None else args.scenes
    folder = args.work_dir / f"n{args.n}"
    folder.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    # written in a child process, so the peak memory below is the grouping's alone
    child = multiprocessing.get_context("fork").Process(target=_write, args=(args, folder))
    child.start()
    child.join()
    if child.exitcode:
        raise SystemExit(f"writing the pool failed (exit code {child.exitcode})")
    truth, partner = np.load(folder / "truth.npy"), np.load(folder / "partner.npy")
    made = time.perf_counter() - started
    descriptors = np.load(folder / "thumb6.npy", mmap_mode="r")
    thumbnails = np.load(folder / "confirm16.npy", mmap_mode="r")
    keys = [f"{i:064x}" for i in range(args.n)]  # sha256-sized keys, as the queue passes them
    priority = np.random.default_rng(args.seed + 1).random(args.n)

    os.environ.setdefault("HARDOOD_QUIET", "1")
    started = time.perf_counter()
    with AnonymousPeak() as anonymous:
        groups = group_near_duplicates(
            keys, descriptors, thumbnails, priority, args.threshold, args.candidate_threshold
        )
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux

    labels = np.where(truth >= 0, truth, -1 - np.arange(args.n))  # unplanted rows: singletons
    representative = groups["representative"].to_numpy()
    recall, false_merge = grouping_quality(representative, labels)
    has_partner = partner >= 0
    merged_misses = int((representative[has_partner] == representative[partner[has_partner]]).sum())
    found = groups["group_size"].to_numpy() > 1
    target_s, target_gb = TARGETS.get(args.n, (None, None))
    rows = [
        ("images", f"{args.n:,}", ""),
        ("planted groups / near-miss pairs", f"{args.groups:,} / {args.near_misses:,}", ""),
        ("thresholds (candidate / confirm)", f"{args.candidate_threshold} / {args.threshold}", ""),
        ("stored files (GB)", f"{_gb(folder):.2f}", ""),
        ("write the files (s)", f"{made:.1f}", ""),
        ("group_near_duplicates (s)", f"{seconds:.1f}", f"< {target_s}" if target_s else ""),
        (
            "peak anonymous memory (GB)",
            f"{anonymous.mb / 1024:.2f}",
            f"< {target_gb}" if target_gb else "",
        ),
        ("peak RSS, with read pages of the memory maps (GB)", f"{peak_gb:.2f}", ""),
        ("pair recall", f"{recall:.4f}", ">= 0.95"),
        ("pair false merges", f"{false_merge:.4f}", "<= 0.01"),
        ("near-miss pairs merged", f"{merged_misses // 2:,}", "0"),
        (
            "images in found groups (planted)",
            f"{int(found.sum()):,} ({int((truth >= 0).sum()):,})",
            "",
        ),  # fmt: skip
        ("load average (1 / 5 / 15 min)", " / ".join(f"{v:.1f}" for v in os.getloadavg()), ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>26}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>26}  {target}")
    if not args.keep:
        shutil.rmtree(folder)
    return 0


def _gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*6.npy")) / 1024**3


if __name__ == "__main__":
    sys.exit(main())
