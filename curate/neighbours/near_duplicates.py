"""Near-duplicate groups for the queue: thumbnail candidates, confirmed by aligned correlation.

Classifier embeddings are the wrong tool for this: a trained classifier maps every picture of one
scene type to nearly the same GAP feature (cosine > 0.97 between different images on the world),
so a cosine threshold either merges whole classes or misses cropped copies. Near duplicates are a
pixel-level question, answered in two steps:

1. Candidates: each image's ``thumbnail_descriptor`` (a 6 x 6 RGB thumbnail, centred and
   L2-normalised; computed by the scoring workers and stored as the ``thumb6`` embedding) is
   compared with ``curate.neighbours.near_pairs.near_pairs``; pairs at or above ``candidate_threshold`` go on.
   The thumbnail is coarse on purpose: a re-encoded, resized or slightly cropped copy stays close.
2. Confirmation: scoring also stores each image's ``confirmation_thumbnail`` (16 x 16 RGB uint8,
   768 bytes, the ``confirm16`` embedding), so confirming never opens an original file. Both
   thumbnails are upsampled to 64 x 64 and ``confirm_pairs`` takes the best normalised
   correlation (area-averaged to 16 x 16 RGB) between one picture and crops of the other (crop
   fractions 0.91 - 0.97 at every 1-pixel offset, both ways round). Two images at or above
   ``threshold`` are near duplicates; groups are connected components of confirmed pairs,
   represented by their highest-priority member.

Defaults (candidate 0.90, threshold 0.985) come from the default world's injected duplicates
(JPEG re-encodes, 0.8-1.25x resizes, 3-8% crops): with 16-pixel stored thumbnails, 0.985 groups
all 100 with no false merge, 0.98 lets one false pair through and 0.99 misses 3% of the pairs
(24-pixel thumbnails are right from 0.985 to 0.99, at 2.25x the disk). ``benches/mining_quality.py`` prints the sweep and
``benches/dedup_scale.py`` times the same function on 10 million images.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from PIL import Image
from threadpoolctl import threadpool_limits

from curate.neighbours.near_pairs import connected_components, near_pairs
from wood_train.progress import progress

THUMB_EMBEDDER = "thumb6"
THUMB_DESCRIPTOR_SIDE = 6
THUMB_DIM = THUMB_DESCRIPTOR_SIDE * THUMB_DESCRIPTOR_SIDE * 3
ALIGN_SIDE = 64
COMPARE_SIDE = 16
CROP_FRACTIONS = (0.97, 0.95, 0.93, 0.91)
# MineConfig's dup_candidate_threshold and dup_threshold repeat these two (its module stays free
# of numpy and pandas, so `hardood mine --help` answers at once)
DEFAULT_DUP_CANDIDATE_THRESHOLD = 0.90  # thumbnail cosine for a pair to be checked at all
DEFAULT_DUP_THRESHOLD = 0.985  # aligned similarity at which two images are near duplicates
CANDIDATE_K = 16
# the stored confirmation thumbnail: CONFIRM_SIDE x CONFIRM_SIDE RGB uint8 (see module docstring)
CONFIRM_EMBEDDER = "confirm16"
CONFIRM_SIDE = 16
CONFIRM_DIM = CONFIRM_SIDE * CONFIRM_SIDE * 3
OFFSET_STEP = 1  # crop offsets tried, in pixels of the ALIGN_SIDE picture
CONFIRM_BLOCK = 256  # images whose windows are held at once (256 x 100 x 768 float32: 79 MB)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _picture(image: np.ndarray | Image.Image) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(image)


def thumbnail_descriptor(image: np.ndarray | Image.Image) -> np.ndarray:
    """(108,) float32: the 6 x 6 RGB box-filtered thumbnail, mean-centred and unit length.

    ``image``: (H, W, 3) uint8, or the RGB Pillow image that holds the same pixels."""
    small = _picture(image).resize((THUMB_DESCRIPTOR_SIDE, THUMB_DESCRIPTOR_SIDE), Image.BOX)
    return _unit(np.asarray(small, np.float32).ravel())


def confirmation_thumbnail(image: np.ndarray | Image.Image) -> np.ndarray:
    """(CONFIRM_DIM,) uint8: the image area-averaged to CONFIRM_SIDE x CONFIRM_SIDE RGB, flattened.

    Scoring stores it (``CONFIRM_EMBEDDER``), so the confirmation never reads an original file.
    ``image`` as for ``thumbnail_descriptor``.
    """
    small = _picture(image).resize((CONFIRM_SIDE, CONFIRM_SIDE), Image.BILINEAR)
    return np.asarray(small, np.uint8).reshape(-1)


def _interpolation(side: int) -> np.ndarray:
    """(ALIGN_SIDE, side) bilinear upsampling matrix (pixel centres, edges clamped)."""
    position = (np.arange(ALIGN_SIDE) + 0.5) * side / ALIGN_SIDE - 0.5
    position = np.clip(position, 0, side - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, side - 1)
    frac = position - low
    matrix = np.zeros((ALIGN_SIDE, side))
    np.add.at(matrix, (np.arange(ALIGN_SIDE), low), 1 - frac)
    np.add.at(matrix, (np.arange(ALIGN_SIDE), high), frac)
    return matrix


@functools.lru_cache(maxsize=4)
def _window_matrices(side: int) -> tuple[np.ndarray, list[int]]:
    """All windows' cell-averaging rows stacked: ((R, side) matrix, offsets per window side).

    Rows ``16 o : 16 (o + 1)`` of a window side's block average the 16 cells of the window that
    starts at offset ``o`` (in ALIGN_SIDE-pixel steps of ``OFFSET_STEP``) of the picture the stored
    thumbnail is bilinearly upsampled to, so one window is ``M_oy @ thumbnail @ M_ox.T``.
    """
    upsample = _interpolation(side)
    blocks, counts = [], []
    for window in [ALIGN_SIDE] + [round(ALIGN_SIDE * f) for f in CROP_FRACTIONS]:
        cells = np.arange(COMPARE_SIDE)
        lo = cells * window // COMPARE_SIDE
        hi = -(-(cells + 1) * window // COMPARE_SIDE)  # ceil: bins overlap by a pixel where uneven
        offsets = range(0, ALIGN_SIDE - window + 1, OFFSET_STEP)
        averaging = np.zeros((len(offsets), COMPARE_SIDE, ALIGN_SIDE))
        for k, offset in enumerate(offsets):
            for c in cells:
                averaging[k, c, offset + lo[c] : offset + hi[c]] = 1.0 / (hi[c] - lo[c])
        blocks.append((averaging @ upsample).reshape(-1, side))
        counts.append(len(offsets))
    return np.concatenate(blocks).astype(np.float32), counts


def _as_images(thumbnails: np.ndarray) -> np.ndarray:
    """(B, 3, S, S) float32 from (B, S * S * 3) stored thumbnails."""
    thumbs = np.asarray(thumbnails)
    side = int(round(np.sqrt(thumbs.shape[1] // 3)))
    return thumbs.reshape(len(thumbs), side, side, 3).transpose(0, 3, 1, 2).astype(np.float32)


def thumbnail_views(thumbnails: np.ndarray, whole_only: bool = False) -> np.ndarray:
    """(B, V, 768) unit vectors: every window of each stored thumbnail (the whole image first).

    Windows are the whole picture and crops of ``CROP_FRACTIONS`` of its side at every offset
    (``OFFSET_STEP`` pixels of the ALIGN_SIDE-pixel picture), each averaged to COMPARE_SIDE x
    COMPARE_SIDE RGB, mean-centred and L2-normalised. ``whole_only``: the whole picture alone.
    Two matrix products for the whole batch: rows of every window, then columns.
    """
    images = _as_images(thumbnails)
    b, _, side, _ = images.shape
    matrix, counts = _window_matrices(side)
    if whole_only:
        matrix, counts = matrix[:COMPARE_SIDE], [1]
    r = COMPARE_SIDE
    # rows: (R, S) @ (S, B*3*S) -> (R, B, 3, S)
    rows = (matrix @ images.transpose(2, 0, 1, 3).reshape(side, -1)).reshape(-1, b, 3, side)
    views = np.empty((b, sum(n * n for n in counts), 3 * r * r), np.float32)
    start, first_view = 0, 0
    for n in counts:
        block = matrix[start : start + n * r]  # this side's windows, for the columns
        these = rows[start : start + n * r].reshape(-1, side)
        # columns: (n*r*B*3, S) @ (S, n*r) -> (n_y, r_y, B, 3, n_x, r_x)
        cells = (these @ block.T).reshape(n, r, b, 3, n, r)
        # copied once, straight into this side's views (B, n_y, n_x, 3, r_y, r_x)
        target = views[:, first_view : first_view + n * n].reshape(b, n, n, 3, r, r)
        np.copyto(target, cells.transpose(2, 0, 4, 3, 1, 5))
        start += n * r
        first_view += n * n
    views -= views.mean(axis=-1, keepdims=True)  # in place: the block is the largest array here
    views /= np.maximum(np.sqrt(np.einsum("bvd,bvd->bv", views, views)), 1e-6)[..., None]
    return views


def aligned_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Best normalised correlation of ``a`` and ``b`` over small crops of either (1.0 = same).

    Compares the two images' ``confirmation_thumbnail``, as the queue does.
    """
    thumbs = np.stack([confirmation_thumbnail(a), confirmation_thumbnail(b)])
    views = thumbnail_views(thumbs)
    return float(max((views[0] @ views[1, 0]).max(), (views[1] @ views[0, 0]).max()))


def candidate_pairs(
    descriptors: np.ndarray,
    thumbnails: np.ndarray,
    candidate_threshold: float = DEFAULT_DUP_CANDIDATE_THRESHOLD,
) -> pd.DataFrame:
    """Pairs (``i < j`` row indices) whose descriptors are close, with their aligned similarity.

    Parameters
    ----------
    descriptors
        (N, THUMB_DIM) ``thumbnail_descriptor`` rows (float16 or float32; a memory map is fine).
    thumbnails
        (N, CONFIRM_DIM) uint8 ``confirmation_thumbnail`` rows, read only for rows in a pair.
    """
    pairs = near_pairs(descriptors, candidate_threshold, CANDIDATE_K)
    keep = pairs.src != pairs.dst
    low = np.minimum(pairs.src[keep], pairs.dst[keep]).astype(np.int64)
    high = np.maximum(pairs.src[keep], pairs.dst[keep]).astype(np.int64)
    n = max(len(descriptors), 1)
    found = np.unique(low * n + high)  # each unordered pair once, sorted by (i, j)
    i, j = found // n, found % n
    return pd.DataFrame(
        {"i": i, "j": j, "similarity": confirm_pairs(np.stack([i, j], axis=1), thumbnails)}
    )


def groups_from_pairs(
    keys: Sequence[str], priority, pairs: pd.DataFrame, threshold: float = DEFAULT_DUP_THRESHOLD
) -> pd.DataFrame:
    """Connected components of the pairs at or above ``threshold``; one row per key.

    Returns ``sha256``, ``representative`` (highest ``priority``, ties to the smaller key),
    ``group_size`` and ``dup_score`` (best confirmed similarity to another member; NaN alone).
    """
    keys = np.asarray(list(keys), dtype=object)
    n = len(keys)
    linked = pairs[pairs["similarity"] >= threshold]
    labels = connected_components(n, linked["i"].to_numpy(), linked["j"].to_numpy())
    best = np.full(n, np.nan)
    ends = np.concatenate([linked["i"], linked["j"]]).astype(np.int64)
    sims = np.concatenate([linked["similarity"], linked["similarity"]])
    if len(ends):
        best_by_end = pd.Series(sims).groupby(ends).max()
        best[best_by_end.index.to_numpy()] = best_by_end.to_numpy()
    sizes = np.bincount(labels, minlength=n)
    representative = keys.copy()  # a singleton represents itself
    grouped = np.nonzero(sizes[labels] > 1)[0]  # usually a small share: sort only those
    if len(grouped):
        frame = pd.DataFrame({"row": grouped, "label": labels[grouped],
                              "priority": np.asarray(priority, float)[grouped],
                              "sha256": keys[grouped]})  # fmt: skip
        ordered = frame.sort_values(["label", "priority", "sha256"], ascending=[True, False, True])
        first = ordered.groupby("label")["row"].first()
        representative[grouped] = keys[first.loc[labels[grouped]].to_numpy()]
    return pd.DataFrame(
        {
            "sha256": keys,
            "representative": representative,
            "group_size": sizes[labels],
            "dup_score": best,
        }
    )


def group_near_duplicates(
    keys: Sequence[str],
    descriptors: np.ndarray,
    thumbnails: np.ndarray,
    priority: Sequence[float] | np.ndarray,
    threshold: float = DEFAULT_DUP_THRESHOLD,
    candidate_threshold: float = DEFAULT_DUP_CANDIDATE_THRESHOLD,
) -> pd.DataFrame:
    """Group near-duplicate images (``candidate_pairs`` then ``groups_from_pairs``).

    This is what ``build_queue`` runs: both inputs are what scoring stored, read from the store's
    memory-mapped files, so nothing here opens an original image.

    Parameters
    ----------
    keys
        Image keys (sha256), one per row.
    descriptors
        (N, THUMB_DIM) ``thumbnail_descriptor`` rows.
    thumbnails
        (N, CONFIRM_DIM) uint8 ``confirmation_thumbnail`` rows.
    priority
        Higher wins the representative (``hardness_score``).

    Examples
    --------
    >>> groups = group_near_duplicates(shas, descriptors, thumbnails, hardness)
    >>> groups[groups.group_size > 1].groupby("representative").size()  # doctest: +SKIP
    """
    pairs = candidate_pairs(descriptors, thumbnails, candidate_threshold)
    return groups_from_pairs(keys, priority, pairs, threshold)


def confirm_pairs(pairs: np.ndarray, thumbnails: np.ndarray) -> np.ndarray:
    """Aligned similarity of each (i, j) row pair: the best of i's windows against j's whole
    picture and j's windows against i's.

    Images are taken in blocks of ``CONFIRM_BLOCK`` rows; each image's windows are built once, and
    only the whole-picture window of its partners, so the work grows with the images in pairs and
    the memory stays one block's.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    scores = np.full(len(pairs), -1.0)
    if not len(pairs):
        return scores
    ends = np.concatenate([pairs[:, 0], pairs[:, 1]])
    partners = np.concatenate([pairs[:, 1], pairs[:, 0]])
    edge = np.concatenate([np.arange(len(pairs))] * 2)
    order = np.argsort(ends, kind="stable")
    ends, partners, edge = ends[order], partners[order], edge[order]
    images = np.unique(ends)
    bounds = np.append(np.searchsorted(ends, images), len(ends))

    def block_scores(start: int) -> tuple[np.ndarray, np.ndarray]:
        block = images[start : start + CONFIRM_BLOCK]
        lo, hi = bounds[start], bounds[min(start + CONFIRM_BLOCK, len(images))]
        views = thumbnail_views(thumbnails[block])
        needed, where = np.unique(partners[lo:hi], return_inverse=True)
        whole = thumbnail_views(thumbnails[needed], whole_only=True)[:, 0]
        best = np.empty(hi - lo)
        for k in range(len(block)):
            a, z = bounds[start + k] - lo, bounds[start + k + 1] - lo
            best[a:z] = (views[k] @ whole[where[a:z]].T).max(axis=0)
        return edge[lo:hi], best

    bar = progress(total=len(images), desc="near-duplicate check", unit="img")
    starts = range(0, len(images), CONFIRM_BLOCK)
    cores = os.cpu_count() or 1
    # numpy releases the GIL in the products, so blocks run side by side on every core; with only
    # a few (uneven) blocks the threads mostly wait on each other and on the products' own
    # threads, and one thread is faster (2 blocks: 0.26 s against 0.43 s on a busy 2-core machine),
    # also inside the products (2 blocks: 0.10 s against 0.09-0.17 s); the scores are the same
    threads = cores if len(starts) >= 2 * cores else 1
    one_thread = threadpool_limits(1) if threads == 1 else contextlib.nullcontext()
    with one_thread, ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(block_scores, starts) if threads > 1 else map(block_scores, starts)
        for start, (edges, best) in zip(starts, results):
            np.maximum.at(scores, edges, best)
            bar.update(min(CONFIRM_BLOCK, len(images) - start))
    bar.close()
    return scores
