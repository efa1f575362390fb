"""The stream of images still to score: paged out of the store, read and decoded in workers.

``PendingImages`` is an ``IterableDataset`` that pages through ok images lacking a score for the
checkpoint (or an embedding of a required embedder) by keyset pagination on the hash, so memory
does not grow with the pool. Each DataLoader worker keeps the images whose hash falls in its shard.
``load_for_scoring`` never raises for a bad file: it returns a record with the
``ImageDecodeError.reason`` (marked ``status='bad'``) or a skip reason (file gone, replaced, no
longer a regular file, above the size cap, or a symlink that now leads out of its root since
ingest; the image stays pending). Files are reached through the app's containment rule and read
through ``image_files.read_pool_file``, as at ingest.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from curate import store
from curate.ingest.image_files import (
    DEFAULT_MAX_FILE_MB,
    RefusedFile,
    locate_in_root,
    read_pool_file,
    resolve_root,
)
from curate.neighbours.near_duplicates import confirmation_thumbnail, thumbnail_descriptor
from wood_train.data.imageio import ImageDecodeError, decode_picture
from wood_train.data.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_long_side

CLIP_IMAGE_SIZE = 224  # long side of the uint8 copy handed to the CLIP embedder
PAGE_SIZE = 1024


def pending_page(
    conn, checkpoint_sha256: str, embedders: tuple[str, ...], after: str, limit: int
) -> list[tuple[str, str, str]]:
    """(sha256, root, relpath) of ok images lacking a score or an embedding, after ``after``."""
    missing = ["NOT EXISTS (SELECT 1 FROM scores s WHERE s.sha256 = i.sha256 "
               "AND s.checkpoint_sha256 = ?)"]  # fmt: skip
    missing += ["NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.sha256 = i.sha256 "
                "AND e.embedder = ?)"] * len(embedders)  # fmt: skip
    rows = conn.execute(
        "SELECT i.sha256, r.path AS root, p.relpath FROM images i "
        "JOIN image_paths p ON p.rowid = "
        "(SELECT MIN(rowid) FROM image_paths WHERE sha256 = i.sha256) "
        "JOIN roots r ON r.root_id = p.root_id "
        f"WHERE i.status = 'ok' AND i.sha256 > ? AND ({' OR '.join(missing)}) "
        "ORDER BY i.sha256 LIMIT ?",
        (after, checkpoint_sha256, *embedders, limit),
    ).fetchall()
    return [(r["sha256"], store.path_text(r["root"]), store.path_text(r["relpath"])) for r in rows]


def count_pending(
    conn: sqlite3.Connection, checkpoint_sha256: str, embedders: tuple[str, ...]
) -> int:
    """How many ok images lack a score for the checkpoint or an embedding of an embedder."""
    total, after = 0, ""
    while page := pending_page(conn, checkpoint_sha256, embedders, after, 50_000):
        total += len(page)
        after = page[-1][0]
    return total


def load_for_scoring(
    sha256: str,
    root: str,
    relpath: str,
    image_size: int,
    clip: bool,
    max_file_bytes: int = int(DEFAULT_MAX_FILE_MB * 2**20),
    resolved_root: tuple | None = None,
) -> dict[str, Any]:
    """Read, verify and decode one image into a padded square tensor, or a bad-image record.

    ``resolved_root``: ``image_files.resolve_root(root)``, when the caller resolved it once."""
    path, refusal = locate_in_root(root, relpath, resolved_root)
    shown = store.shown_path(Path(root) / relpath)
    if path is None:
        return {"sha256": sha256, "skip": refusal, "detail": shown}
    try:
        data = read_pool_file(path, max_file_bytes)
    except RefusedFile as refused:
        detail = f"{shown}: {refused.detail}" if refused.detail else shown
        return {"sha256": sha256, "skip": refused.reason, "detail": detail}
    return decode_for_scoring(sha256, shown, data, image_size, clip)


def decode_for_scoring(
    sha256: str, shown: str, data: bytes, image_size: int, clip: bool
) -> dict[str, Any]:
    """``load_for_scoring`` on bytes already read (the Ray engine reads them via pyarrow);
    ``shown`` is the path that messages name."""
    if hashlib.sha256(data).hexdigest() != sha256:
        # the file was replaced after ingest: its new content is not this image; re-ingest
        return {"sha256": sha256, "skip": "changed_on_disk", "detail": shown}
    try:
        image, picture = decode_picture(data, shown)
    except ImageDecodeError as exc:
        return {"sha256": sha256, "bad": exc.reason, "detail": str(exc)}
    height, width = image.shape[:2]
    # normalised once per batch (collate_scoring), not here per image
    scaled = image if max(height, width) == image_size else resize_long_side(picture, image_size)
    item = {
        "sha256": sha256,
        "pixels": scaled,
        "side": image_size,
        "valid": scaled.shape[:2],
        "size": (width, height),
        "thumb": thumbnail_descriptor(picture),
        "confirm": confirmation_thumbnail(picture),
    }
    if clip:
        small = (
            image
            if max(height, width) <= CLIP_IMAGE_SIZE
            else resize_long_side(picture, CLIP_IMAGE_SIZE)
        )
        item["clip_image"] = small
    return item


class PendingImages(IterableDataset):
    """Streams the images still to score; each worker takes the hashes of its own shard.

    It runs in DataLoader worker processes, so it takes the store's path and opens its own
    connection for each page (a connection cannot cross a process boundary).
    """

    def __init__(
        self,
        db_path,
        checkpoint_sha256,
        embedders,
        image_size,
        clip=False,
        max_file_bytes=int(DEFAULT_MAX_FILE_MB * 2**20),
    ):
        self.db_path = Path(db_path)
        self.checkpoint_sha256 = checkpoint_sha256
        self.embedders = tuple(embedders)
        self.image_size = image_size
        self.clip = clip
        self.max_file_bytes = max_file_bytes

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        after = ""
        while True:
            with store.connect(self.db_path) as conn:
                page = pending_page(conn, self.checkpoint_sha256, self.embedders, after, PAGE_SIZE)
            if not page:
                return
            after = page[-1][0]
            roots: dict[str, tuple] = {}  # each root resolved once a page
            for sha256, root, relpath in page:
                # shard by content hash, not by position, so rows other workers finish in the
                # meantime cannot shift which images this worker owns
                if int(sha256[:8], 16) % n_workers == worker:
                    if root not in roots:
                        roots[root] = resolve_root(root)
                    yield load_for_scoring(sha256, root, relpath, self.image_size, self.clip,
                                           self.max_file_bytes, roots[root])  # fmt: skip


def padded_batch(pixels: list[np.ndarray], side: int) -> torch.Tensor:
    """(B, 3, side, side) float32: each (h, w, 3) uint8 image ImageNet-normalised in the top-left
    corner, zeros (the mean colour after normalisation) elsewhere.

    The same values as ``normalize_image`` of each image pasted into a zero tensor, computed for
    the whole batch at once: one pass of numpy per operation instead of one per image.
    """
    batch = np.zeros((len(pixels), side, side, 3), np.uint8)
    for b, image in enumerate(pixels):
        batch[b, : image.shape[0], : image.shape[1]] = image
    # channels first while still uint8 (a quarter of the bytes to move), then the same float32
    # operations as normalize_image, element by element
    x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
    x /= 255.0
    x -= IMAGENET_MEAN[:, None, None]
    x /= IMAGENET_STD[:, None, None]
    for b, image in enumerate(pixels):
        x[b, :, image.shape[0] :, :] = 0.0
        x[b, :, :, image.shape[1] :] = 0.0
    return torch.from_numpy(x)


def collate_scoring(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [i for i in items if "pixels" in i]
    return {
        "n": len(items),
        "sha256": [i["sha256"] for i in good],
        "x": padded_batch([i["pixels"] for i in good], good[0]["side"]) if good else None,
        "valid": [i["valid"] for i in good],
        "thumbs": np.stack([i["thumb"] for i in good]) if good else None,
        "confirms": np.stack([i["confirm"] for i in good]) if good else None,
        "size": [i["size"] for i in good],
        "clip_images": [i["clip_image"] for i in good if "clip_image" in i],
        "bad": [(i["sha256"], i["bad"], i["detail"]) for i in items if "bad" in i],
        "skipped": [(i["sha256"], i["skip"], i["detail"]) for i in items if "skip" in i],
    }
