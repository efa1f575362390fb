"""Score the pool with the baseline classifier (WOOD_SPEC section 2), one forward per image.

A streamed ``IterableDataset`` pages the not-yet-scored images out of the store (keyset pagination,
so memory does not grow with the pool); DataLoader workers read, verify and decode them (without
workers, a thread does, a few batches ahead of the forward). An image that cannot be decoded comes back as a record with its ``ImageDecodeError.reason`` and is marked
``status='bad'``; it never stops the run. Each batch is written in one transaction (scores, image
sizes, bad images, embeddings), so a run killed at any moment resumes where it stopped and never
writes a row twice.

Per image, from one pass of ``CamNet.features``: class probabilities ``sigmoid(W . GAP(F))``, the
top class and its probability (``top_score``), ``energy_score = logsumexp(logits)``, the
``hardness_score``, a ``heatmap_size``-square uint8 heatmap of the top class's CAM
``ReLU(W_top . F)`` (max-normalised over the image), and the classifier embedding ``z / ||z||``.

Hardness (``hardness`` setting):

- ``probability`` (default, the paper's rule): ``hardness_score = top_score``.
- ``energy``: ``hardness_score = sigmoid(energy_score - log C)``. The energy score is the
  log-sum-exp of the C class logits (the negative free energy of Liu et al. 2020, high for inputs
  the classifier finds in-distribution); subtracting ``log C`` and squashing keeps it in (0, 1) and
  makes it equal to ``top_score`` when all logits are equal. It is a per-image function of the
  logits (no rank over the pool), so a stored score never changes when the pool grows.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from curate import store
from curate.ingest.image_files import DEFAULT_MAX_FILE_MB
from curate.neighbours.near_duplicates import CONFIRM_EMBEDDER, THUMB_EMBEDDER
from curate.score.cpu_threads import one_cpu_thread
from curate.score.pending import PendingImages, collate_scoring, count_pending
from curate.score.prefetch import Prefetcher
from curate.score.scored_batch import ScoredBatch, ScoreTarget, write_scored
from wood_train.device import autocast, pin_memory
from wood_train.errors import ConfigError
from wood_train.model.finite import check_finite_outputs
from wood_train.progress import progress

WORLD_IMAGE_SIZE = 64
PREFETCH_BATCHES = 2  # batches read ahead by the thread that loads when there are no workers
VOC_IMAGE_SIZE = 448
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


def resolve_image_size(requested: int | None, checkpoint_meta: dict[str, Any]) -> int:
    """The scoring size: as requested, else the checkpoint's training crop, else 448 VOC / 64."""
    if requested:
        return int(requested)
    config = checkpoint_meta.get("config") or {}
    for key in ("image_size", "crop"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return int(config[key])
    if tuple(checkpoint_meta.get("class_names") or ()) == VOC_CLASSES:
        return VOC_IMAGE_SIZE
    return WORLD_IMAGE_SIZE


def classifier_embedder_name(checkpoint_sha256: str) -> str:
    """Embeddings of the classifier depend on its weights, so the name carries the hash."""
    return f"classifier-{checkpoint_sha256[:12]}"


# ---- the forward ---------------------------------------------------------------------------


def hardness_from(top_score: np.ndarray, energy_score: np.ndarray, mode: str, num_classes: int):
    """The hardness_score of each image (see the module docstring)."""
    if mode == "probability":
        return np.asarray(top_score, dtype=np.float64)
    if mode == "energy":
        return 1.0 / (1.0 + np.exp(-(np.asarray(energy_score, np.float64) - math.log(num_classes))))
    raise ConfigError(f"hardness must be 'probability' or 'energy', got {mode!r}")


def score_batch(model, x: torch.Tensor, valid: list[tuple[int, int]], heatmap_size: int) -> dict:
    """One forward: probabilities, energy, top class, CAM heatmaps and embeddings (numpy)."""
    feats = model.features(x)
    with one_cpu_thread(feats.device):
        return _outputs_from_features(model, feats, x.shape[-1], valid, heatmap_size)


def _outputs_from_features(model, feats, image_size, valid, heatmap_size) -> dict:
    z = feats.float().mean(dim=(2, 3))
    weight = model.classifier.weight.float()
    logits = z @ weight.flatten(1).t()
    probs = torch.sigmoid(logits)
    top_score, top_class = probs.max(dim=1)
    weights_top = weight.flatten(1)[top_class]  # (B, D)
    # ReLU(W_top . F) as one batched product (B, 1, D) @ (B, D, HW): the same sums as
    # einsum("bdhw,bd->bhw"), which copies F into (B, HW, D) first (ten times slower here)
    flat = feats.float().flatten(2)
    cams = F.relu(torch.bmm(weights_top[:, None, :], flat).view(-1, *feats.shape[2:]))
    # the CAM cells that cover the image itself (not its padding), batched per shape
    cells = [
        (
            max(1, math.ceil(h / image_size * cams.shape[1])),
            max(1, math.ceil(w / image_size * cams.shape[2])),
        )
        for h, w in valid
    ]
    heat = torch.empty(len(valid), heatmap_size, heatmap_size, device=cams.device)
    for rows, cols in set(cells):
        members = [b for b, shape in enumerate(cells) if shape == (rows, cols)]
        crop = cams[members, :rows, :cols][:, None]
        heat[members] = F.interpolate(crop, size=(heatmap_size, heatmap_size), mode="bilinear")[
            :, 0
        ]
    heat = heat / (heat.amax(dim=(1, 2), keepdim=True) + 1e-5)
    heatmaps = (heat.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return {
        "probs": probs.cpu().numpy(),
        "top_class": top_class.cpu().numpy(),
        "top_score": top_score.cpu().numpy(),
        "energy_score": torch.logsumexp(logits, dim=1).cpu().numpy(),
        "embedding": F.normalize(z, dim=1).cpu().numpy().astype(np.float32),
        "heatmap": heatmaps,
    }


# ---- the loop ------------------------------------------------------------------------------


@dataclass
class ScoreReport:
    """What one scoring pass did: ``counts`` (scored, bad reasons, skips) and example problems."""

    counts: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def add(self, n: int, bad: list, skipped: list) -> None:
        """Count a batch of ``n`` images, of which ``bad`` and ``skipped`` (sha, reason, detail)."""
        self.counts["scored"] += n - len(bad) - len(skipped)
        for _, reason, detail in bad:
            self.counts[f"bad:{reason}"] += 1
            if len(self.problems) < 10:
                self.problems.append(detail)
        for _, reason, detail in skipped:
            self.counts[f"skipped:{reason}"] += 1
            if len(self.problems) < 10:
                self.problems.append(f"{detail} ({reason.replace('_', ' ')})")

    def summary(self) -> str:
        bad = sum(v for k, v in self.counts.items() if k.startswith("bad:"))
        skipped = sum(v for k, v in self.counts.items() if k.startswith("skipped:"))
        return (
            f"score: {self.counts['scored']} images scored, {bad} could not be decoded, "
            f"{skipped} skipped (file gone or changed since ingest)"
        )


@dataclass
class Scorer:
    """The models of one scoring pass: the classifier and, optionally, a CLIP embedder."""

    model: torch.nn.Module
    checkpoint_sha256: str
    class_names: list[str]
    image_size: int
    device: torch.device
    clip: Any = None  # curate.score.clip.OpenClipEmbedder
    clip_embedder: str | None = None

    @property
    def classifier_embedder(self) -> str:
        return classifier_embedder_name(self.checkpoint_sha256)

    @property
    def embedders(self) -> tuple[str, ...]:
        names = (self.classifier_embedder, THUMB_EMBEDDER, CONFIRM_EMBEDDER)
        return names + ((self.clip_embedder,) if self.clip is not None else ())

    @property
    def target(self) -> ScoreTarget:
        return ScoreTarget(self.checkpoint_sha256, self.classifier_embedder, self.clip_embedder)


def score_pool(
    conn: sqlite3.Connection,
    scorer: Scorer,
    run_id: int,
    hardness: str = "probability",
    heatmap_size: int = 32,
    batch_size: int = 64,
    workers: int = 1,
    amp: bool = True,
    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * 2**20),
) -> ScoreReport:
    """Score every ok image that lacks a score (or an embedding) for this checkpoint.

    Each batch is committed on its own: scores, decoded sizes, bad images and embedding rows
    together, so a killed run loses at most the batch in flight and the next run resumes.

    Examples
    --------
    >>> model, meta = load_cam_net("baseline.pt")  # doctest: +SKIP
    >>> scorer = Scorer(model, meta["weights_sha256"], meta["class_names"], 64, torch.device("cpu"))
    >>> with store.connect("curation.db") as conn:  # doctest: +SKIP
    ...     score_pool(conn, scorer, run_id=1).counts["scored"]
    """
    hardness_from(np.zeros(1), np.zeros(1), hardness, 1)  # reject an unknown mode before work
    report = ScoreReport()
    total = count_pending(conn, scorer.checkpoint_sha256, scorer.embedders)
    if total == 0:
        return report
    # the workers read pending pages through their own connections (one per process)
    dataset = PendingImages(store.db_path(conn), scorer.checkpoint_sha256, scorer.embedders,
                            scorer.image_size, clip=scorer.clip is not None,
                            max_file_bytes=max_file_bytes)  # fmt: skip
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_scoring,
        pin_memory=pin_memory(scorer.device),
    )
    files: dict = {}
    bar = progress(total=total, desc="score", unit="img")
    # without worker processes, a thread reads and decodes the next batch during this one's forward
    batches = (
        Prefetcher(_on_one_thread(loader), PREFETCH_BATCHES)
        if workers == 0
        else contextlib.nullcontext(loader)
    )
    with batches as loaded:
        for batch in loaded:
            scored = score_loaded(scorer, batch, hardness, heatmap_size, amp)
            write_scored(conn, scorer.target, run_id, scored, files)
            report.add(batch["n"], batch["bad"], batch["skipped"])
            bar.update(batch["n"])
    bar.close()
    return report


def _on_one_thread(batches):
    """Iterate ``batches`` on one torch CPU thread (run by the prefetching thread), so that its
    tensor copies do not start a second team of threads competing with the forward's."""
    with one_cpu_thread():
        yield from batches


def score_loaded(
    scorer: Scorer, batch: dict, hardness: str, heatmap_size: int, amp: bool = True
) -> ScoredBatch:
    """The forward (and CLIP) over one collated batch of decoded images (``collate_scoring``)."""
    if batch["x"] is None:
        return ScoredBatch.only_bad(batch["bad"], len(scorer.class_names))
    with torch.inference_mode(), autocast(scorer.device, amp):
        x = batch["x"].to(scorer.device, non_blocking=True)
        result = score_batch(scorer.model, x, batch["valid"], heatmap_size)
    check_finite_outputs(result, f"checkpoint {scorer.checkpoint_sha256[:12]}")
    clip_embedding = clip_fg = None
    if scorer.clip is not None:
        clip_embedding = np.asarray(scorer.clip.embed(batch["clip_images"]), dtype=np.float32)
        clip_fg = np.asarray(scorer.clip.foreground_probability(clip_embedding, scorer.class_names))
    return ScoredBatch(
        sha256=list(batch["sha256"]),
        size=list(batch["size"]),
        probs=result["probs"],
        top_class=result["top_class"],
        top_score=result["top_score"],
        hardness_score=hardness_from(
            result["top_score"], result["energy_score"], hardness, len(scorer.class_names)
        ),  # fmt: skip
        energy_score=result["energy_score"],
        heatmap=result["heatmap"],
        embedding=result["embedding"],
        descriptor=batch["thumbs"],
        thumbnail=batch["confirms"],
        clip_embedding=clip_embedding,
        clip_fg_score=clip_fg,
        bad=list(batch["bad"]),
    )


def rescore_hardness(
    conn: sqlite3.Connection, checkpoint_sha256: str, mode: str, num_classes: int
) -> int:
    """Recompute ``hardness_score`` of stored scores for another mode (no forward needed)."""
    hardness_from(np.zeros(1), np.zeros(1), mode, num_classes)
    with store.transaction(conn, immediate=True):
        rows = conn.execute(
            "SELECT sha256, top_score, energy_score, hardness_score FROM scores "
            "WHERE checkpoint_sha256 = ?",
            (checkpoint_sha256,),
        ).fetchall()
        if not rows:
            return 0
        values = hardness_from(
            np.array([r["top_score"] for r in rows]),
            np.array([r["energy_score"] for r in rows]),
            mode,
            num_classes,
        )
        changed = [
            (float(v), r["sha256"], checkpoint_sha256)
            for r, v in zip(rows, values)
            if abs(float(v) - r["hardness_score"]) > 1e-12
        ]
        conn.executemany(
            "UPDATE scores SET hardness_score = ? WHERE sha256 = ? AND checkpoint_sha256 = ?",
            changed,
        )
    return len(changed)
