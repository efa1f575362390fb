"""One batch of scoring results, the same whichever engine produced it, and how it is stored.

The local engine writes a ``ScoredBatch`` straight into the store (``write_scored``). The Ray engine
turns it into an Arrow table (``to_arrow``), one Parquet shard per batch, and the merge step reads
the shards back (``from_arrow``) and calls the same ``write_scored``. So both engines store exactly
the same rows: scores, image sizes, bad images with their reasons, classifier and CLIP embeddings,
thumbnail descriptors and confirmation thumbnails.

``write_scored`` is idempotent, keyed by (image hash, checkpoint hash): a score row already there is
kept (only a missing ``clip_fg_score`` is filled in), a vector already there is not appended again
and marking a bad image twice changes nothing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curate import store
from curate.neighbours.near_duplicates import CONFIRM_EMBEDDER, THUMB_EMBEDDER


@dataclass
class ScoredBatch:
    """Per-image results of one batch; array rows follow ``sha256`` (the images decoded)."""

    sha256: list[str]
    size: list[tuple[int, int]]  # (width, height) as decoded
    probs: np.ndarray  # (B, C) float32
    top_class: np.ndarray  # (B,) int
    top_score: np.ndarray
    hardness_score: np.ndarray
    energy_score: np.ndarray
    heatmap: np.ndarray  # (B, h, h) uint8
    embedding: np.ndarray  # (B, D) float32, L2-normalised GAP feature
    descriptor: np.ndarray  # (B, THUMB_DIM) thumbnail descriptors
    thumbnail: np.ndarray  # (B, CONFIRM_DIM) uint8 confirmation thumbnails
    clip_embedding: np.ndarray | None = None
    clip_fg_score: np.ndarray | None = None
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # (sha256, reason, detail)

    @classmethod
    def only_bad(cls, bad: list[tuple[str, str, str]], n_classes: int = 0) -> ScoredBatch:
        """A batch in which no image could be decoded."""
        empty = np.zeros(0)
        return cls([], [], np.zeros((0, n_classes), np.float32), empty.astype(int), empty, empty,
                   empty, np.zeros((0, 1, 1), np.uint8), np.zeros((0, 1), np.float32),
                   np.zeros((0, 1), np.float32), np.zeros((0, 1), np.uint8), bad=list(bad))  # fmt: skip

    # ---- Parquet shards -----------------------------------------------------------------------

    def to_arrow(self) -> pa.Table:
        """One row per image, decoded (``status`` ok) or bad (``status`` bad, with its reason)."""
        n_ok, n_bad = len(self.sha256), len(self.bad)

        def matrix(values, dtype):
            values = np.asarray(values, dtype=dtype).reshape(n_ok, -1)
            flat = pa.array(values.reshape(-1), type=pa.from_numpy_dtype(dtype))
            column = pa.FixedSizeListArray.from_arrays(flat, values.shape[1] if n_ok else 0)
            return pa.concat_arrays([column, pa.nulls(n_bad, column.type)])

        def scalar(values, dtype):
            return pa.concat_arrays(
                [
                    pa.array(np.asarray(values, dtype=dtype)),
                    pa.nulls(n_bad, pa.from_numpy_dtype(dtype)),
                ]
            )

        columns = {
            "sha256": pa.array(self.sha256 + [b[0] for b in self.bad], pa.string()),
            "status": pa.array(["ok"] * n_ok + ["bad"] * n_bad, pa.string()),
            "bad_reason": pa.array([None] * n_ok + [b[1] for b in self.bad], pa.string()),
            "bad_detail": pa.array([None] * n_ok + [b[2] for b in self.bad], pa.string()),
            "width": scalar([w for w, _ in self.size], np.int64),
            "height": scalar([h for _, h in self.size], np.int64),
            "probs": matrix(self.probs, np.float32),
            "top_class": scalar(self.top_class, np.int64),
            "top_score": scalar(self.top_score, np.float64),
            "hardness_score": scalar(self.hardness_score, np.float64),
            "energy_score": scalar(self.energy_score, np.float64),
            "heatmap": matrix(self.heatmap, np.uint8),
            "embedding": matrix(self.embedding, np.float32),
            "descriptor": matrix(self.descriptor, np.float32),
            "thumbnail": matrix(self.thumbnail, np.uint8),
        }
        if self.clip_embedding is not None:
            columns["clip_embedding"] = matrix(self.clip_embedding, np.float32)
            columns["clip_fg_score"] = scalar(self.clip_fg_score, np.float64)
        return pa.table(columns)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> ScoredBatch:
        """The batch ``to_arrow`` wrote (rows of decoded images first, bad images after)."""
        status = table.column("status").to_numpy(zero_copy_only=False)
        ok = table.filter(pa.array(status == "ok"))
        bad = table.filter(pa.array(status == "bad"))

        def matrix(name, dtype):
            column = ok.column(name).combine_chunks()
            width = column.type.list_size
            return column.flatten().to_numpy().astype(dtype).reshape(len(ok), width)

        def scalar(name, dtype):
            return ok.column(name).to_numpy().astype(dtype)

        heatmap = matrix("heatmap", np.uint8)
        side = int(round(np.sqrt(heatmap.shape[1]))) if len(ok) else 0
        has_clip = "clip_embedding" in table.column_names
        return cls(
            sha256=ok.column("sha256").to_pylist(),
            size=list(zip(scalar("width", int).tolist(), scalar("height", int).tolist())),
            probs=matrix("probs", np.float32),
            top_class=scalar("top_class", np.int64),
            top_score=scalar("top_score", np.float64),
            hardness_score=scalar("hardness_score", np.float64),
            energy_score=scalar("energy_score", np.float64),
            heatmap=heatmap.reshape(len(ok), side, side),
            embedding=matrix("embedding", np.float32),
            descriptor=matrix("descriptor", np.float32),
            thumbnail=matrix("thumbnail", np.uint8),
            clip_embedding=matrix("clip_embedding", np.float32) if has_clip else None,
            clip_fg_score=scalar("clip_fg_score", np.float64) if has_clip else None,
            bad=list(
                zip(
                    bad.column("sha256").to_pylist(),
                    bad.column("bad_reason").to_pylist(),
                    bad.column("bad_detail").to_pylist(),
                )
            ),
        )


@dataclass(frozen=True)
class ScoreTarget:
    """Where a batch goes: the checkpoint's score rows and the names of its embedders."""

    checkpoint_sha256: str
    classifier_embedder: str
    clip_embedder: str | None = None
    descriptor_dtype: str = "float16"  # a new store's thumbnail descriptors (half the disk)


def write_scored(
    conn: sqlite3.Connection,
    target: ScoreTarget,
    run_id: int,
    batch: ScoredBatch,
    files: dict | None = None,
) -> None:
    """Store one batch in one transaction: bad images, sizes, scores and every vector.

    ``files`` caches the open ``EmbeddingFile`` of each embedder across the batches of one pass.
    """
    from curate.neighbours.vector_index import EmbeddingFile, sync_files

    files = {} if files is None else files
    with store.transaction(conn, immediate=True):
        conn.executemany(
            "UPDATE images SET status = 'bad', bad_reason = ? WHERE sha256 = ?",
            [(reason, sha) for sha, reason, _ in batch.bad],
        )
        shas = batch.sha256
        if not shas:
            return
        conn.executemany(
            "UPDATE images SET width = ?, height = ? WHERE sha256 = ?",
            [(int(w), int(h), sha) for sha, (w, h) in zip(shas, batch.size)],
        )
        clip_fg = batch.clip_fg_score
        heatmap_size = int(batch.heatmap.shape[1])
        conn.executemany(
            "INSERT INTO scores(sha256, checkpoint_sha256, run_id, probs, top_class, top_score, "
            "hardness_score, energy_score, clip_fg_score, heatmap, heatmap_size) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(sha256, checkpoint_sha256) DO UPDATE SET "
            "clip_fg_score = COALESCE(excluded.clip_fg_score, scores.clip_fg_score)",
            [
                (
                    sha,
                    target.checkpoint_sha256,
                    run_id,
                    store.encode_probs(batch.probs[b]),
                    int(batch.top_class[b]),
                    float(batch.top_score[b]),
                    float(batch.hardness_score[b]),
                    float(batch.energy_score[b]),
                    None if clip_fg is None else float(clip_fg[b]),
                    store.encode_heatmap(batch.heatmap[b]),
                    heatmap_size,
                )
                for b, sha in enumerate(shas)
            ],
        )
        vectors = [
            (target.classifier_embedder, batch.embedding, "float32"),
            (THUMB_EMBEDDER, batch.descriptor, target.descriptor_dtype),
            (CONFIRM_EMBEDDER, batch.thumbnail, "uint8"),
        ]
        if batch.clip_embedding is not None:
            vectors.append((target.clip_embedder, batch.clip_embedding, "float32"))
        written = []
        for name, matrix, dtype in vectors:
            if name not in files:
                files[name] = EmbeddingFile.for_writing(conn, name, matrix.shape[1], dtype)
            # skips images the file already holds
            if files[name].append(shas, matrix, sync=False):
                written.append(files[name])
        sync_files(written)  # before the commit: no table row ever points past the file's end
