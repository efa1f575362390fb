"""Scoring on a Ray cluster (``hardood mine --engine ray``): Ray Data in, Parquet shards out.

The driver lists the pending images from the store (the same query as the local engine) into an
Arrow table; Ray Data splits it into batches and hands them to a pool of ``ShardScorer`` actors
(``map_batches`` with a callable class: each actor loads the classifier, and CLIP when asked,
once). An actor reads each file (a pool root that is a URI, ``s3://`` or ``gs://``, through a
pyarrow filesystem; a local root through the same containment and size checks as the local
engine), decodes, verifies the hash and scores exactly as the local engine does
(``decode_for_scoring``, ``score_loaded``), and writes the batch as one Parquet shard in the run
folder. Actors never touch SQLite. When the job ends, ``merge_shards`` folds the shards into the
store in one step.

A job killed mid-way leaves whole shards behind (each is written under a temporary name and
renamed). The next run merges them first, so it scores only the images no shard holds.

Ray is an optional extra: ``pip install 'hardood[ray]'`` (or ``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate.ingest.image_files import DEFAULT_MAX_FILE_MB
from curate.score.pending import (
    collate_scoring,
    decode_for_scoring,
    load_for_scoring,
    pending_page,
)
from curate.score.scoring import Scorer, ScoreReport, hardness_from, score_loaded
from curate.score.shards import merge_shards, read_bytes, run_folder, write_shard
from wood_train.errors import ConfigError
from wood_train.progress import progress

INSTALL_HINT = (
    "--engine ray needs Ray, an optional extra: pip install 'ray[data]>=2.9' "
    "(from a checkout: pip install -e '.[ray]')"
)
LISTING_PAGE = 50_000


def import_ray():
    """``ray`` and ``ray.data``, or a ConfigError that says how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class ActorSpec:
    """What each scoring actor needs to rebuild the scorer on its own machine."""

    checkpoint: str
    checkpoint_sha256: str
    image_size: int
    hardness: str
    heatmap_size: int
    amp: bool
    shard_folder: str
    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * 2**20)
    device: str = "auto"
    threads: int = 1
    clip_model: str | None = None
    clip_checkpoint: str | None = None


class ShardScorer:
    """A Ray Data actor: one model load, then one Parquet shard per batch of (sha256, root,
    relpath) rows."""

    def __init__(self, spec: ActorSpec):
        import torch

        from wood_train.device import resolve_device
        from wood_train.model.checkpoint import load_cam_net

        torch.set_num_threads(max(1, spec.threads))
        device = resolve_device(spec.device)
        model, meta = load_cam_net(spec.checkpoint, device)
        if meta["weights_sha256"] != spec.checkpoint_sha256:
            raise ConfigError(
                f"{spec.checkpoint} on this worker has weights {meta['weights_sha256'][:12]}, "
                f"the driver's has {spec.checkpoint_sha256[:12]}; give every node the same file"
            )
        clip = clip_name = None
        if spec.clip_checkpoint:
            from curate.score.clip import OpenClipEmbedder

            clip = OpenClipEmbedder(spec.clip_model, spec.clip_checkpoint, device)
            clip_name = clip.name
        self.spec = spec
        self.scorer = Scorer(model, spec.checkpoint_sha256, list(meta["class_names"]),
                             spec.image_size, device, clip, clip_name)  # fmt: skip

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.spec
        items = []
        for sha256, root, relpath in zip(batch["sha256"], batch["root"], batch["relpath"]):
            sha256, root, relpath = str(sha256), str(root), str(relpath)
            if "://" not in root:  # a local pool: the local engine's contained, capped reader
                items.append(load_for_scoring(sha256, root, relpath, spec.image_size,
                                              self.scorer.clip is not None, spec.max_file_bytes))  # fmt: skip
                continue
            uri = f"{root.rstrip('/')}/{relpath}"
            try:
                data = read_bytes(uri, spec.max_file_bytes)
            except OSError as exc:
                items.append(
                    {"sha256": sha256, "skip": "unreadable_file", "detail": f"{uri}: {exc}"}
                )
                continue
            items.append(decode_for_scoring(sha256, uri, data, spec.image_size,
                                            self.scorer.clip is not None))  # fmt: skip
        collated = collate_scoring(items)
        scored = score_loaded(self.scorer, collated, spec.hardness, spec.heatmap_size, spec.amp)
        if scored.sha256 or scored.bad:
            write_shard(scored, spec.shard_folder)
        status = {sha: ("ok", "", "") for sha in scored.sha256}
        status.update({sha: ("bad", reason, detail) for sha, reason, detail in scored.bad})
        status.update({s: ("skipped", reason, detail) for s, reason, detail in collated["skipped"]})
        outcome = [status[str(sha)] for sha in batch["sha256"]]
        return {
            "sha256": np.asarray(batch["sha256"]),
            "status": np.array([o[0] for o in outcome]),
            "reason": np.array([o[1] for o in outcome]),
            "detail": np.array([o[2] for o in outcome]),
        }


@dataclass(frozen=True)
class RaySettings:
    """``--ray-address``, ``--ray-concurrency``, ``--ray-cpus-per-actor``, ``--ray-run-dir``."""

    address: str | None = None
    concurrency: int | None = None  # actors; none = one per GPU, else 1
    cpus_per_actor: float | None = None  # none = the cluster's CPUs / actors
    run_dir: str | None = None  # none = <db stem>.shards/ beside the store


def pending_table(conn: sqlite3.Connection, scorer: Scorer) -> pa.Table:
    """(sha256, root, relpath) of every image the local engine would score, as an Arrow table."""
    columns: list[list[str]] = [[], [], []]
    after = ""
    while page := pending_page(conn, scorer.checkpoint_sha256, scorer.embedders, after,
                               LISTING_PAGE):  # fmt: skip
        for column, values in zip(columns, zip(*page)):
            column.extend(values)
        after = page[-1][0]
    names = ("sha256", "root", "relpath")
    return pa.table({name: pa.array(values, pa.string()) for name, values in zip(names, columns)})


def start_ray(address: str | None):
    """Connect to a cluster (``auto`` or an address) or start a local Ray; returns (ray, started).

    ``started`` is True when this call started Ray (the caller shuts it down again).
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count(), **kwargs)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one tqdm bar of our own, with rate and ETA
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray, True


def score_pool_ray(
    conn: sqlite3.Connection,
    scorer: Scorer,
    spec: ActorSpec,
    run_id: int,
    batch_size: int,
    settings: RaySettings = RaySettings(),
    log: Callable[[str], None] = print,
) -> ScoreReport:
    """Score the pending images on Ray, then merge the shards; the local engine's report.

    ``scorer`` is the driver's own (it names the checkpoint and the embedders pending is checked
    against); the actors build theirs from ``spec``.
    """
    hardness_from(np.zeros(1), np.zeros(1), spec.hardness, 1)
    report = ScoreReport()
    folder = spec.shard_folder
    leftover = merge_shards(conn, folder, scorer.target, run_id)
    if leftover.shards:
        log(f"merge: {leftover.shards} shards left by an interrupted run, {leftover.images} "
            f"images and {leftover.bad} bad images folded in before scoring")  # fmt: skip
        report.counts["merged_leftover"] = leftover.images + leftover.bad
    pending = pending_table(conn, scorer)
    if pending.num_rows == 0:
        return report
    started = time.perf_counter()
    ray, started_here = start_ray(settings.address)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        actors = settings.concurrency or max(1, gpus)
        cpus = settings.cpus_per_actor or max(1.0, float(resources.get("CPU", 1)) / actors)
        spec = _with_threads(spec, cpus)
        log(f"ray: {resources.get('CPU', 0):.0f} CPUs, {gpus} GPUs; {actors} actor(s) with "
            f"{cpus:g} CPUs{' and 1 GPU' if gpus else ''} each "
            f"[started in {time.perf_counter() - started:.1f} s]")  # fmt: skip
        report.counts["ray_start_seconds"] = round(time.perf_counter() - started, 2)
        dataset = ray.data.from_arrow(pending).map_batches(
            ShardScorer,
            fn_constructor_kwargs={"spec": spec},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus,
            num_gpus=1 if gpus else 0,
        )
        bar = progress(total=pending.num_rows, desc="score (ray)", unit="img")
        for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            bad = [(s, r, d) for s, st, r, d in _rows(out) if st == "bad"]
            skipped = [(s, r, d) for s, st, r, d in _rows(out) if st == "skipped"]
            report.add(len(out["sha256"]), bad, skipped)
            bar.update(len(out["sha256"]))
        bar.close()
    finally:
        if started_here:
            ray.shutdown()
    merged = merge_shards(conn, folder, scorer.target, run_id)
    log(f"merge: {merged.shards} shards, {merged.images} images, {merged.bad} bad images")
    return report


def _rows(out: dict[str, np.ndarray]):
    return zip(out["sha256"].tolist(), out["status"].tolist(), out["reason"].tolist(),
               out["detail"].tolist())  # fmt: skip


def _with_threads(spec: ActorSpec, cpus: float) -> ActorSpec:
    from dataclasses import replace

    return replace(spec, threads=max(1, int(cpus)))


def default_shard_folder(conn: sqlite3.Connection, checkpoint_sha256: str, run_dir: str | None):
    """``run_dir``/<checkpoint hash prefix>, or the folder beside the store."""
    if run_dir:
        return f"{run_dir.rstrip('/')}/{checkpoint_sha256[:12]}"
    return run_folder(conn, checkpoint_sha256)
