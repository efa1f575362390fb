"""`hardood similar` at pool scale: seconds per question and recall@k of the approximate index.

Builds a store holding ``--n`` images with ``--dim``-d embeddings (float16, memory-mapped: ten
million of them never have to fit in RAM), clustered like real embeddings (``--clusters`` centres
plus noise), then asks ``find_similar`` about ``--queries`` random images. Beyond 100,000 vectors it
answers from the saved IVF-PQ index (``curate.neighbours.approximate_index``); the first question
builds it and is timed apart. Recall@k: the share of the exact k nearest (a brute-force
scan of the memory map) among the k returned. Targets at 10M: under 1 s per question, recall@20
>= 0.9.

    python benches/similar_scale.py --n 1000000      # about 1 GB of disk in --work-dir
    python benches/similar_scale.py --n 10000000     # about 10 GB of disk in --work-dir
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.peak_memory import AnonymousPeak  # noqa: E402
from curate import store  # noqa: E402
from curate.neighbours.similar import find_similar  # noqa: E402
from curate.neighbours.vector_index import EmbeddingFile  # noqa: E402
from wood_train.progress import progress  # noqa: E402

EMBEDDER = "clip-bench"
CHUNK = 65_536


def clustered(rng: np.random.Generator, centres: np.ndarray, count: int, noise: float):
    x = centres[rng.integers(0, len(centres), count)]
    x = x + noise * rng.standard_normal(x.shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_store(args, db: Path) -> list[str]:
    store.delete_store(db)
    store.open_store(db)
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    keys = [f"{i:064x}" for i in range(args.n)]
    with store.connect(db) as conn:
        file = EmbeddingFile(conn, EMBEDDER, args.dim, dtype="float16")
        for start in progress(range(0, args.n, CHUNK), desc="writing the store", unit="chunk"):
            chunk = keys[start : start + CHUNK]
            with store.transaction(conn):
                conn.executemany(
                    "INSERT INTO images(sha256, status) VALUES (?, 'ok')", [(k,) for k in chunk]
                )
                file.append(chunk, clustered(rng, centres, len(chunk), args.noise))
    return keys


def exact_neighbours(data: np.ndarray, rows: list[int], k: int) -> np.ndarray:
    queries = np.asarray(data[rows], dtype=np.float32)
    best = np.full((len(rows), k + 1), -np.inf, np.float32)
    best_rows = np.zeros((len(rows), k + 1), np.int64)
    for start in range(0, len(data), CHUNK):
        sims = queries @ np.asarray(data[start : start + CHUNK], dtype=np.float32).T
        both = np.concatenate([best, sims], axis=1)
        both_rows = np.concatenate(
            [best_rows, np.arange(start, start + sims.shape[1])[None].repeat(len(rows), 0)], axis=1
        )
        top = np.argpartition(-both, k, axis=1)[:, : k + 1]
        best = np.take_along_axis(both, top, 1)
        best_rows = np.take_along_axis(both_rows, top, 1)
    out = []
    for q, r in enumerate(rows):
        order = np.argsort(-best[q])
        out.append([x for x in best_rows[q][order] if x != r][:k])
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/benches/similar_scale"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    db = args.work_dir / f"similar{args.n}.db"
    started = time.perf_counter()
    keys = build_store(args, db)
    made = time.perf_counter() - started
    rows = np.random.default_rng(args.seed + 1).choice(args.n, args.queries + 1, replace=False)
    with store.connect(db) as conn, AnonymousPeak() as anonymous:
        started = time.perf_counter()
        find_similar(conn, keys[rows[0]], k=args.k, embedder=EMBEDDER)
        first = time.perf_counter() - started
        os.environ.setdefault("HARDOOD_QUIET", "1")  # no bars around the timed questions
        seconds, recalls = [], []
        data = EmbeddingFile.open(conn, EMBEDDER)._memmap()
        exact = exact_neighbours(data, [int(r) for r in rows[1:]], args.k)
        for row, truth in zip(rows[1:], exact):
            started = time.perf_counter()
            table = find_similar(conn, keys[row], k=args.k, embedder=EMBEDDER)
            seconds.append(time.perf_counter() - started)
            found = {int(s, 16) for s in table["sha256"]}
            recalls.append(len(found & set(truth.tolist())) / args.k)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    rows_out = [
        ("images x dim (float16 file)", f"{args.n:,} x {args.dim}", ""),
        ("write the store (s)", f"{made:.1f}", ""),
        ("first question, builds the index (s)", f"{first:.1f}", ""),
        (
            f"seconds per question (median / max of {args.queries})",
            f"{statistics.median(seconds):.3f} / {max(seconds):.3f}",
            "< 1",
        ),
        (f"recall@{args.k} (mean / min)", f"{np.mean(recalls):.3f} / {min(recalls):.2f}", ">= 0.9"),
        ("peak anonymous memory, questions (GB)", f"{anonymous.mb / 1024:.2f}", ""),
        ("peak RSS, with read pages of the memory maps (GB)", f"{peak:.2f}", ""),
        ("load average (1 / 5 / 15 min)", " / ".join(f"{v:.1f}" for v in os.getloadavg()), ""),
    ]
    width = max(len(r[0]) for r in rows_out)
    print(f"{'measure':<{width}}  {'value':>22}  target")
    for name, value, target in rows_out:
        print(f"{name:<{width}}  {value:>22}  {target}")
    if not args.keep:
        store.delete_store(db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
