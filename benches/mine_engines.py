"""`hardood mine` on the local engine and on Ray, side by side, and the cost of each mining stage.

1. Engines: the same pool (a world with 5,000 pool images, 64 px, a resnet18 shaped like the world
   preset's) is mined from an empty store with ``--engine local`` and ``--engine ray`` (a local
   Ray with every CPU of this machine), alternating, ``--repeats`` times. Scoring img/s of each
   (the score step, reading and decoding included; for Ray the merge of its shards included and
   its start-up left out) and their ratio; Ray's start-up is reported apart. Target: Ray at
   2 CPUs >= 0.8 of local.
2. Stages: per-image milliseconds of decode, forward, write (SQLite and the vector files), shard
   (an actor's Parquet write), merge, dedup (``group_near_duplicates``) and queue (the rest of
   ``build_queue``), each timed alone on the same images, so the README can compute what a
   cluster would take.

Run: ``python benches/mine_engines.py [--pool-size 5000] [--repeats 1]`` (needs the ``[ray]`` extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.mine_throughput import world_shaped_checkpoint  # noqa: E402
from curate import store  # noqa: E402
from curate.ingest.pool_sources import iter_pool  # noqa: E402
from curate.ingest.register import ingest_pool  # noqa: E402
from curate.mine import mine, queue_settings  # noqa: E402
from curate.mine_config import PRESETS  # noqa: E402
from curate.neighbours import near_duplicates  # noqa: E402
from curate.queue.build import build_queue  # noqa: E402
from curate.score.pending import collate_scoring, load_for_scoring, pending_page  # noqa: E402
from curate.score.scored_batch import write_scored  # noqa: E402
from curate.score.scoring import Scorer, score_loaded  # noqa: E402
from curate.score.shards import merge_shards, write_shard  # noqa: E402
from wood_train.config import replace  # noqa: E402
from wood_train.model.checkpoint import load_cam_net  # noqa: E402
from wood_train.world.config import WORLD_PRESETS  # noqa: E402
from wood_train.world.generate import find_world, generate_world  # noqa: E402


def world_pool(work: Path, size: int) -> Path:
    """A default world whose pool holds ``size`` images (hard, easy, contaminated, duplicates)."""
    base = WORLD_PRESETS["default"]
    scale = size / base.n_pool_originals / (1 + base.n_pool_duplicates / base.n_pool_originals)
    config = replace(
        base, n_train=8, n_val=4,
        n_pool_hard=round(base.n_pool_hard * scale), n_pool_easy=round(base.n_pool_easy * scale),
        n_pool_contaminated=round(base.n_pool_contaminated * scale),
        n_pool_duplicates=round(base.n_pool_duplicates * scale),
    )  # fmt: skip
    root = work / f"world_pool{size}"
    return (find_world(root, config) or generate_world(config, root)).pool_dir


def run_engine(work: Path, checkpoint: Path, pool: Path, engine: str, batch: int) -> dict:
    db = work / f"{engine}.db"
    store.delete_store(db)
    shutil.rmtree(work / f"{engine}.shards", ignore_errors=True)
    config = replace(PRESETS["world"], db=db, checkpoint=checkpoint, pool=(str(pool),),
                     batch_size=batch, engine=engine)  # fmt: skip
    lines: list[str] = []
    started = time.perf_counter()
    result = mine(config, log=lines.append)
    total = time.perf_counter() - started
    score_line = next(line for line in lines if line.startswith("score: "))
    score_s = float(score_line.rsplit("[", 1)[1].split(" s", 1)[0])
    start_s = float(result.counts.get("score_ray_start_seconds", 0.0))
    return {"scored": result.counts["score_scored"], "score_s": score_s - start_s,
            "start_s": start_s, "total_s": total}  # fmt: skip


def stage_costs(work: Path, checkpoint: Path, pool: Path, batch: int) -> pd.DataFrame:
    """Per-image ms of each stage, each timed alone on the same images."""
    model, meta = load_cam_net(checkpoint)
    class_names = list(meta["class_names"])
    scorer = Scorer(model, meta["weights_sha256"], class_names, 64, torch.device("cpu"))
    dbs = [work / "stages.db", work / "stages_merge.db"]
    runs = []
    for db in dbs:
        store.delete_store(db)
        store.open_store(db)
        with store.connect(db) as conn:
            store.ensure_classes(conn, class_names)
            run_id = store.start_run(conn, "mine", {}, meta["weights_sha256"])
            ingest_pool(conn, iter_pool(pool), fg_tags={}, run_id=run_id)
        runs.append(run_id)
    with store.connect(dbs[0]) as conn:
        page = pending_page(conn, scorer.checkpoint_sha256, scorer.embedders, "", 10**9)
    n = len(page)
    times: dict[str, float] = {}

    def timed(name, fn):
        started = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - started
        return out

    items = timed("decode", lambda: [load_for_scoring(s, r, p, 64, False) for s, r, p in page])
    batches = [collate_scoring(items[i : i + batch]) for i in range(0, n, batch)]
    with torch.inference_mode():
        scored = timed(
            "forward", lambda: [score_loaded(scorer, b, "probability", 32) for b in batches]
        )
    with store.connect(dbs[0]) as conn:
        files: dict = {}
        timed(
            "write", lambda: [write_scored(conn, scorer.target, runs[0], s, files) for s in scored]
        )
    folder = str(work / "stages.shards")
    shutil.rmtree(folder, ignore_errors=True)
    timed("shard", lambda: [write_shard(s, folder) for s in scored])
    with store.connect(dbs[1]) as conn:
        timed("merge", lambda: merge_shards(conn, folder, scorer.target, runs[1]))
    dedup_seconds = []
    original = near_duplicates.group_near_duplicates

    def timed_dedup(*args, **kwargs):
        started = time.perf_counter()
        out = original(*args, **kwargs)
        dedup_seconds.append(time.perf_counter() - started)
        return out

    import curate.queue.build as build_module

    build_module.group_near_duplicates = timed_dedup
    try:
        with store.connect(dbs[0]) as conn:
            settings = queue_settings(replace(PRESETS["world"]))
            timed("queue", lambda: build_queue(conn, scorer.checkpoint_sha256,
                                               scorer.classifier_embedder, model.feature_dim,
                                               runs[0], settings))  # fmt: skip
    finally:
        build_module.group_near_duplicates = original
    times["dedup"] = dedup_seconds[0]
    times["queue"] -= times["dedup"]
    rows = [(name, 1000 * seconds / n, n / seconds) for name, seconds in times.items()]
    return pd.DataFrame(rows, columns=["stage", "ms per image", "img/s"]), n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("runs/benches/engines"))
    parser.add_argument("--pool-size", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HARDOOD_QUIET", "1")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    pool = world_pool(args.work_dir, args.pool_size)
    checkpoint = world_shaped_checkpoint(args.work_dir / "world_shaped.pt")
    n_files = sum(1 for _ in iter_pool(pool))
    print(f"pool: {n_files} images of {pool} (64 px), resnet18, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")  # fmt: skip

    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    for repeat in range(args.repeats):
        for engine in ("local", "ray"):
            runs[engine].append(
                run_engine(args.work_dir, checkpoint, pool, engine, args.batch_size)
            )
            r = runs[engine][-1]
            print(f"repeat {repeat + 1} {engine}: {r['scored']} scored, score step "
                  f"{r['scored'] / r['score_s']:.1f} img/s, start-up {r['start_s']:.1f} s")  # fmt: skip
    rows = []
    for engine in ("local", "ray"):
        rates = [r["scored"] / r["score_s"] for r in runs[engine]]
        starts = [r["start_s"] for r in runs[engine]]
        rows.append((engine, statistics.median(rates), max(rates), statistics.median(starts)))
    table = pd.DataFrame(rows, columns=["engine", "img/s (median)", "img/s (best)",
                                        "start-up s (median)"])  # fmt: skip
    table["ratio to local (best)"] = table["img/s (best)"] / table["img/s (best)"].iloc[0]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    ratio = table["ratio to local (best)"].iloc[1]
    print(f"target: Ray >= 0.8 of local -> {'met' if ratio >= 0.8 else 'NOT met'} ({ratio:.2f})")
    print()
    stages, n = stage_costs(args.work_dir, checkpoint, pool, args.batch_size)
    print(f"per-image cost of each stage, timed alone on the same {n} images:")
    print(stages.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("load average (1 / 5 / 15 min): " + " / ".join(f"{v:.1f}" for v in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
