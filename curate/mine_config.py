"""The mining config (``hardood mine``) and its named presets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wood_train.config import config_field

HARDNESS_MODES = ("probability", "energy")
ENGINES = ("local", "ray")
EMBEDDERS = ("classifier", "open_clip")
DEFAULT_EMBEDDER = "classifier"  # the baseline classifier's GAP features


@dataclass(frozen=True)
class MineConfig:
    """Everything one mining run needs: ingest -> score -> embed -> dedup -> queue.

    Presets: ``world`` (64 px images, CPU) and ``voc12`` (OpenImages-scale pool, 448 px, VOC tags).
    """

    # inputs
    db: Path = config_field(
        Path("curation.db"), "the curation store (SQLite); created on first use"
    )
    checkpoint: Path | None = config_field(
        None, "baseline classifier checkpoint that scores the pool"
    )
    pool: tuple[str, ...] = config_field(
        (), "pool sources: folders, .txt lists of paths, or .csv with paths"
    )
    tags_csv: tuple[Path, ...] = config_field(
        (),
        "image-level tags: OpenImages' image-label CSVs as published (human-verified and/or "
        "machine-generated), or a CSV with a path/ImageID column and a tags column",
        repeat=True,
    )
    class_descriptions: Path | None = config_field(
        None, "OpenImages' MID -> name file (oidv7-class-descriptions.csv or the boxable one)"
    )
    label_hierarchy: Path | None = config_field(
        None, "OpenImages' bbox_labels_600_hierarchy.json: exclude a class's subcategories too"
    )
    min_tag_confidence: float = config_field(
        0.5, "a machine-generated OpenImages label excludes an image from this confidence up"
    )
    tag_map: Path | None = config_field(
        None, "class,mid,name CSV; none = the shipped VOC -> OpenImages map"
    )
    path_column: str | None = config_field(
        None, "path column of a pool/tags CSV; none = auto-detect"
    )
    tags_column: str | None = config_field(
        None, "tags column of a pool/tags CSV; none = auto-detect"
    )
    max_file_mb: float = config_field(
        256.0, "pool files larger than this are refused before they are read"
    )
    follow_symlinks: bool = config_field(
        False, "register symlinks that lead out of the pool root as their targets (else refused)"
    )
    rehash: bool = config_field(False, "re-hash files already registered with the same size")
    # scoring (WOOD_SPEC section 2)
    image_size: int | None = config_field(
        None, "scoring size; none = checkpoint's crop, else 448 VOC / 64"
    )
    hardness: str = config_field(
        "probability", "probability (top-class sigmoid) | energy (see scoring.py)"
    )
    heatmap_size: int = config_field(32, "side of the stored top-class CAM heatmap")
    batch_size: int = config_field(64, "images per forward pass")
    workers: int | None = config_field(
        None, "DataLoader processes that read and decode; none = auto (0 CPU)"
    )
    device: str = config_field("auto", "auto | cpu | cuda | cuda:N")
    amp: bool = config_field(True, "bf16/fp16 autocast on CUDA")
    engine: str = config_field(
        "local", "local (this process) | ray (Ray Data actors, Parquet shards, one merge)"
    )
    ray_address: str | None = config_field(
        None, "with --engine ray: auto, or a cluster address; none starts a local Ray"
    )
    ray_concurrency: int | None = config_field(
        None, "with --engine ray: scoring actors; none = one per GPU, else 1"
    )
    ray_cpus_per_actor: float | None = config_field(
        None, "with --engine ray: CPUs per actor; none = the cluster's CPUs / actors"
    )
    ray_run_dir: str | None = config_field(
        None, "with --engine ray: shard folder (path or s3:// gs:// URI); none = NAME.shards/"
    )
    embedder: str = config_field("classifier", "classifier (L2-normalised GAP feature) | open_clip")
    clip_model: str = config_field("ViT-B-32", "open_clip model name (with --embedder open_clip)")
    clip_checkpoint: Path | None = config_field(
        None, "local open_clip weights file (never downloaded)"
    )
    clip_fg_weight: float = config_field(0.0, "ranking penalty per unit of clip_fg_score (0 = off)")
    # queue (curate.queue.build)
    queue_size: int = config_field(1000, "images in the review queue")
    min_hardness: float = config_field(
        0.5, "candidates below this hardness_score stay out of the queue"
    )
    dup_threshold: float = config_field(
        0.985, "aligned similarity at which two images are near duplicates"
    )
    dup_candidate_threshold: float = config_field(
        0.90, "thumbnail cosine for a pair to be checked at all"
    )
    clusters_per_class: int = config_field(20, "K-means clusters within each top class (diversity)")
    hardness_tier: float = config_field(
        1.0, "width (logits) of a hardness tier; clusters interleave within one"
    )
    max_class_share: float = config_field(
        0.5, "at most this fraction of the queue per top class (quota)"
    )
    expand_from_verdicts: bool = config_field(
        False, "also queue nearest neighbours of confirmed hard OoDs"
    )
    expand_k: int = config_field(5, "neighbours per confirmed hard OoD with --expand-from-verdicts")
    expand_min_similarity: float = config_field(
        0.9, "cosine similarity a neighbour needs to a confirmed hard OoD to be expanded"
    )
    seed: int = config_field(0, "seed of the K-means clustering")


PRESETS: dict[str, MineConfig] = {
    "default": MineConfig(),
    "world": MineConfig(image_size=64, batch_size=64, clusters_per_class=8),
    "voc12": MineConfig(image_size=448, batch_size=32, workers=4, queue_size=5000),
}
