"""`hardood mine`: ingest a candidate pool, score it, embed it, group duplicates, build the queue.

WOOD_SPEC section 2. One ``runs`` row per call records the checkpoint hash, the resolved config,
the tool version, start/end and the counts. Every step is resumable: files already registered are
not re-hashed, images already scored by the same checkpoint are skipped, scoring commits per
batch, and the queue is rebuilt in one transaction (verdicts and leases are never touched), so
re-running the same command after a crash or a kill continues where it stopped. A store copied
without its ``NAME.embeddings/`` folder is repaired the same way: the images whose vectors are
missing are embedded again.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from curate import store
from curate.ingest.openimages import (
    image_id_of,
    is_image_label_file,
    read_class_descriptions,
    read_label_hierarchy,
    scan_label_files,
)
from curate.ingest.pool_sources import (
    TagTable,
    foreground_tags,
    iter_pool,
    load_tag_map,
    tag_map_mids,
)
from curate.ingest.register import ingest_pool
from curate.mine_config import EMBEDDERS, ENGINES, HARDNESS_MODES, MineConfig
from curate.neighbours.vector_index import forget_missing_vectors
from curate.queue.build import QueueSettings, build_queue
from curate.score.cpu_threads import one_cpu_thread
from curate.score.scoring import (
    Scorer,
    rescore_hardness,
    resolve_image_size,
    score_pool,
)
from wood_train import config as cfg
from wood_train.device import resolve_device
from wood_train.errors import ConfigError, MissingInputError
from wood_train.model.checkpoint import load_cam_net


@dataclass
class MineResult:
    """What a mining run did: its run id, counts, the queue and the bad-image reasons."""

    run_id: int
    db: Path
    counts: dict = field(default_factory=dict)
    bad_reasons: dict = field(default_factory=dict)  # store-wide: reason -> images
    queue: pd.DataFrame = field(default_factory=pd.DataFrame)


def bad_reason_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Images with ``status='bad'`` in the store, per reason."""
    rows = conn.execute(
        "SELECT bad_reason, COUNT(*) AS n FROM images WHERE status = 'bad' "
        "GROUP BY bad_reason ORDER BY n DESC, bad_reason"
    ).fetchall()
    return {r["bad_reason"] or "unknown": r["n"] for r in rows}


def _check(config: MineConfig) -> None:
    if config.checkpoint is None:
        raise ConfigError("mine needs --checkpoint (the baseline classifier that scores the pool)")
    if config.hardness not in HARDNESS_MODES:
        raise ConfigError(f"--hardness must be one of {HARDNESS_MODES}, got {config.hardness!r}")
    if config.engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {ENGINES}, got {config.engine!r}")
    if config.engine == "ray":
        from curate.score.ray_engine import import_ray

        import_ray()  # without Ray installed: say how to install it, before any work
    if config.embedder not in EMBEDDERS:
        raise ConfigError(f"--embedder must be one of {EMBEDDERS}, got {config.embedder!r}")
    if config.embedder == "open_clip" and config.clip_checkpoint is None:
        raise ConfigError("--embedder open_clip needs --clip-checkpoint (a local weights file)")
    if config.clip_checkpoint is not None and not Path(config.clip_checkpoint).is_file():
        raise MissingInputError(f"CLIP checkpoint not found: {config.clip_checkpoint}")
    for source in config.pool:
        if not Path(source).exists():
            raise MissingInputError(f"pool source not found: {source}")
    for flag, path in [("--tags-csv", t) for t in config.tags_csv] + [
        ("--class-descriptions", config.class_descriptions),
        ("--label-hierarchy", config.label_hierarchy),
        ("--tag-map", config.tag_map),
    ]:
        if path is not None and not Path(path).is_file():
            raise MissingInputError(f"{flag} {path}: file not found")
    if not 0.0 < config.min_tag_confidence <= 1.0:
        raise ConfigError(
            f"--min-tag-confidence must be in (0, 1], got {config.min_tag_confidence}"
        )
    if config.max_file_mb <= 0:
        raise ConfigError(f"--max-file-mb must be positive, got {config.max_file_mb}")
    if config.queue_size < 0 or config.batch_size < 1 or (config.workers or 0) < 0:
        raise ConfigError("--queue-size, --batch-size and --workers must not be negative")


def loader_workers(requested: int | None, device) -> int:
    """DataLoader workers: as requested, else 0 on a CPU and up to 8 with a GPU.

    On a CPU, reading and decoding are a few percent of a forward pass: a thread in this process
    does them during the forward (``curate.score.prefetch``), where a worker process would compete
    with the forward's threads for the same cores (``benches/mine_throughput.py``).
    """
    if requested is not None:
        return requested
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


def queue_settings(config: MineConfig) -> QueueSettings:
    names = {f.name for f in dataclasses.fields(QueueSettings)}
    return QueueSettings(**{k: v for k, v in cfg.to_dict(config).items() if k in names})


def mine(config: MineConfig, log: Callable[[str], None] = print) -> MineResult:
    """Run ingest -> score -> embed -> dedup -> queue; ``log`` gets one line per step.

    Examples
    --------
    >>> config = PRESETS["world"]
    >>> config = cfg.replace(config, db="curation.db", checkpoint="baseline.pt", pool=("pool",))
    >>> result = mine(config)  # doctest: +SKIP
    >>> result.queue.head()  # doctest: +SKIP
    """
    _check(config)
    device = resolve_device(config.device)
    with one_cpu_thread():  # building, loading and checking the weights: many small tensor ops
        model, meta = load_cam_net(config.checkpoint, device)
    class_names = list(meta["class_names"])
    db = store.open_store(config.db)
    config = cfg.replace(
        config,
        image_size=resolve_image_size(config.image_size, meta),
        workers=loader_workers(config.workers, device),
    )
    with store.connect(db) as conn:
        with store.transaction(conn):
            store.ensure_classes(conn, class_names, source=str(config.checkpoint))
        run_id = store.start_run(conn, "mine", cfg.to_dict(config), meta["weights_sha256"])
        counts: Counter = Counter()
        try:
            _ingest_step(conn, config, class_names, run_id, counts, log)
            _forget_missing_vectors_step(conn, log)
            scorer = _score_step(conn, config, model, meta, device, run_id, counts, log)
            queue = _queue_step(conn, config, scorer, run_id, counts, log)
            bad = bad_reason_counts(conn)
            log("bad images: " + (", ".join(f"{k} {v}" for k, v in bad.items()) or "none"))
        except KeyboardInterrupt:
            store.finish_run(conn, run_id, "interrupted", dict(counts))
            raise
        except BaseException:
            store.finish_run(conn, run_id, "failed", dict(counts))
            raise
        store.finish_run(conn, run_id, "done", dict(counts))
    return MineResult(run_id, db, dict(counts), bad, queue)


def _tag_sources(config: MineConfig, class_names, log) -> tuple[dict[str, str], list]:
    """The foreground tags (names and MIDs) and the sources of tags outside the pool listing."""
    tag_map = load_tag_map(config.tag_map)
    descriptions = (
        read_class_descriptions(config.class_descriptions) if config.class_descriptions else None
    )
    hierarchy = read_label_hierarchy(config.label_hierarchy) if config.label_hierarchy else None
    fg_tags = foreground_tags(class_names, tag_map, descriptions, hierarchy)
    if descriptions is not None:
        known = {mid.lower() for mid in descriptions}
        mapped = tag_map_mids({c: tag_map.get(c, set()) for c in class_names})
        unknown = sorted(mid for mid in mapped if mid not in known)
        if unknown:
            log(f"tag map: {len(unknown)} MID(s) not in {config.class_descriptions}: {unknown[:5]}")
    label_files = [p for p in config.tags_csv if is_image_label_file(p)]
    sources: list = [
        TagTable(p, config.path_column, config.tags_column)
        for p in config.tags_csv
        if p not in label_files
    ]
    if label_files:
        pool_ids = {
            image_id_of(item.relpath)
            for source in config.pool
            for item in iter_pool(source, config.path_column, config.tags_column)
        }
        scan = scan_label_files(
            label_files,
            [tag for tag in fg_tags if tag.startswith("/")],
            config.min_tag_confidence,
            known_mids=descriptions,
            image_ids=pool_ids,
        )
        log(scan.summary())
        sources.append(scan)
    return fg_tags, sources


def _ingest_step(conn, config: MineConfig, class_names, run_id, counts, log) -> None:
    fg_tags, tag_sources = _tag_sources(config, class_names, log)
    for source in config.pool:
        started = time.perf_counter()
        files = iter_pool(source, config.path_column, config.tags_column)
        report = ingest_pool(
            conn,
            files,
            fg_tags,
            run_id,
            tag_sources,
            rehash=config.rehash,
            max_file_bytes=int(config.max_file_mb * 2**20),
            follow_symlinks=config.follow_symlinks,
        )
        counts.update({f"ingest_{k}": v for k, v in report.counts.items()})
        log(f"{report.summary()}  [{source}, {time.perf_counter() - started:.1f} s]")
        if report.excluded_by:
            ranked = sorted(report.excluded_by.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{name} {n}" for name, n in ranked)
            log(f"  tag-excluded per class: {shown}")
        for problem in report.problems:
            log(f"  not read: {problem}")


def _forget_missing_vectors_step(conn, log) -> None:
    dropped = forget_missing_vectors(conn)
    if dropped:
        folder = store.embeddings_dir(conn)
        log(
            f"embeddings: {sum(dropped.values())} vectors missing from {folder} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(dropped.items()))}); embedding them again"
        )


def _score_step(conn, config: MineConfig, model, meta, device, run_id, counts, log) -> Scorer:
    started = time.perf_counter()
    clip, clip_name = None, None
    if config.embedder == "open_clip":
        from curate.score.clip import OpenClipEmbedder

        clip = OpenClipEmbedder(config.clip_model, config.clip_checkpoint, device)
        clip_name = clip.name
    scorer = Scorer(model, meta["weights_sha256"], list(meta["class_names"]), config.image_size,
                    device, clip, clip_name)  # fmt: skip
    if config.engine == "ray":
        report = _score_on_ray(conn, config, scorer, run_id, log)
    else:
        report = score_pool(conn, scorer, run_id, config.hardness, config.heatmap_size,
                            config.batch_size, config.workers, config.amp,
                            int(config.max_file_mb * 2**20))  # fmt: skip
    seconds = time.perf_counter() - started
    counts.update({f"score_{k.replace(':', '_')}": v for k, v in report.counts.items()})
    rate = f", {report.counts['scored'] / seconds:.1f} img/s" if report.counts["scored"] else ""
    log(f"{report.summary()}  [{seconds:.1f} s{rate}]")
    for problem in report.problems:
        log(f"  {problem}")
    rescore_hardness(conn, scorer.checkpoint_sha256, config.hardness, len(scorer.class_names))
    return scorer


def _score_on_ray(conn, config: MineConfig, scorer: Scorer, run_id, log):
    from curate.score.ray_engine import ActorSpec, RaySettings, default_shard_folder, score_pool_ray

    spec = ActorSpec(
        checkpoint=str(Path(config.checkpoint).resolve()),
        checkpoint_sha256=scorer.checkpoint_sha256,
        image_size=config.image_size,
        hardness=config.hardness,
        heatmap_size=config.heatmap_size,
        amp=config.amp,
        shard_folder=default_shard_folder(conn, scorer.checkpoint_sha256, config.ray_run_dir),
        max_file_bytes=int(config.max_file_mb * 2**20),
        device=config.device,
        clip_model=config.clip_model if config.embedder == "open_clip" else None,
        clip_checkpoint=str(Path(config.clip_checkpoint).resolve())
        if config.embedder == "open_clip"
        else None,
    )
    settings = RaySettings(config.ray_address, config.ray_concurrency, config.ray_cpus_per_actor,
                           config.ray_run_dir)  # fmt: skip
    return score_pool_ray(conn, scorer, spec, run_id, config.batch_size, settings, log)


def _queue_step(conn, config: MineConfig, scorer: Scorer, run_id, counts, log) -> pd.DataFrame:
    started = time.perf_counter()
    if scorer.clip is None:
        embedder, dim = scorer.classifier_embedder, scorer.model.feature_dim
    else:
        embedder, dim = scorer.clip_embedder, _clip_dim(scorer.clip)
    queue = build_queue(
        conn, scorer.checkpoint_sha256, embedder, dim, run_id, queue_settings(config)
    )
    counts["queue"] = len(queue)
    groups = _group_stats(conn)
    counts.update(groups)
    log(
        f"dedup: {groups['dup_groups']} near-duplicate groups covering "
        f"{groups['dup_members']} images (threshold {config.dup_threshold})"
    )
    log(f"queue: {len(queue)} images ranked ({_class_mix(queue)})  "
        f"[{time.perf_counter() - started:.1f} s]")  # fmt: skip
    return queue


def _clip_dim(clip) -> int:
    if isinstance(getattr(clip, "dim", None), int):
        return clip.dim
    visual = getattr(getattr(clip, "model", None), "visual", None)
    if isinstance(getattr(visual, "output_dim", None), int):
        return visual.output_dim
    return int(clip.embed([np.zeros((32, 32, 3), np.uint8)]).shape[1])


def _group_stats(conn: sqlite3.Connection) -> Counter:
    row = conn.execute(
        "SELECT COUNT(DISTINCT representative) AS groups, COUNT(*) AS members "
        "FROM dup_groups WHERE group_size > 1"
    ).fetchone()
    return Counter(dup_groups=row["groups"], dup_members=row["members"])


def _class_mix(queue: pd.DataFrame) -> str:
    if queue.empty:
        return "empty"
    mix = queue["class_name"].value_counts()
    return ", ".join(f"{name} {n}" for name, n in mix.items())


# ---- `hardood mine` ---------------------------------------------------------------------------
