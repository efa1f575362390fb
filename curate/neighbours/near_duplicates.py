"""Near-duplicate groups for the queue: thumbnail candidates, confirmed by aligned correlation.

Classifier embeddings are the wrong tool for this: a trained classifier maps every picture of one
scene type to nearly the same GAP feature (cosine > 0.97 between different images on the world),
so a cosine threshold either merges whole classes or misses cropped copies. Near duplicates are a
pixel-level question, answered in two steps:

1. Candidates: each image's ``thumbnail_descriptor`` (a 6 x 6 RGB thumbnail, centred and
   L2-normalised; computed by the scoring workers and stored as the ``thumb6`` embedding) is
   compared with ``curate.neighbours.near_pairs.near_pairs``; pairs at or above ``candidate_threshold`` go on.
   The thumbnail is coarse on purpose: a re-encoded, resized or slightly cropped copy stays close.
2. Confirmation: ``aligned_similarity`` resizes both images to 64 x 64 and takes the best
   normalised correlation (area-averaged to 16 x 16 RGB) between one image and crops of the other (crop fractions
   0.91 - 0.97 at every 1-pixel offset, both ways round). Two images at or above ``threshold``
   are near duplicates; groups are connected components of confirmed pairs, represented by their
   highest-priority member.

Defaults (candidate 0.90, threshold 0.98) come from the default world's injected duplicates
(JPEG re-encodes, 0.8-1.25x resizes, 3-8% crops): see ``benches/mining_quality.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

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
DEFAULT_DUP_THRESHOLD = 0.98  # aligned similarity at which two images are near duplicates
CANDIDATE_K = 16


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def thumbnail_descriptor(image: np.ndarray) -> np.ndarray:
    """(108,) float32: the 6 x 6 RGB box-filtered thumbnail, mean-centred and unit length."""
    small = Image.fromarray(image).resize((THUMB_DESCRIPTOR_SIDE, THUMB_DESCRIPTOR_SIDE), Image.BOX)
    return _unit(np.asarray(small, np.float32).ravel())


def _aligned(image: np.ndarray) -> np.ndarray:
    """(3, 65, 65) integral image of the picture resized to the alignment side."""
    resized = Image.fromarray(image).resize((ALIGN_SIDE, ALIGN_SIDE), Image.BILINEAR)
    pixels = np.asarray(resized, np.float64).transpose(2, 0, 1)
    integral = np.zeros((3, ALIGN_SIDE + 1, ALIGN_SIDE + 1))
    integral[:, 1:, 1:] = pixels.cumsum(1).cumsum(2)
    return integral


def _windows(integral: np.ndarray, side: int) -> np.ndarray:
    """(n * n, 768) unit vectors: every side x side window (1-pixel steps), area-averaged to 16^2.

    Box sums come from the integral image: one gather for the row bands, one for the columns.
    """
    cells = np.arange(COMPARE_SIDE)
    lo = cells * side // COMPARE_SIDE
    hi = -(-(cells + 1) * side // COMPARE_SIDE)  # ceil: bins overlap by a pixel where uneven
    offsets = np.arange(ALIGN_SIDE - side + 1)
    y0, y1 = offsets[:, None] + lo, offsets[:, None] + hi  # (n, COMPARE_SIDE)
    rows = integral[:, y1] - integral[:, y0]  # row bands: (3, n, cell, 65)
    sums = rows[..., y1] - rows[..., y0]  # then columns: (3, n, cell, n, cell)
    area = (hi - lo)[:, None, None] * (hi - lo)[None, None, :]
    means = sums / area
    n = len(offsets)
    return _unit(means.transpose(1, 3, 0, 2, 4).reshape(n * n, -1))


def _base(integral: np.ndarray) -> np.ndarray:
    return _windows(integral, ALIGN_SIDE)[0]


def _views(integral: np.ndarray) -> np.ndarray:
    """(V, 768) unit vectors: the whole image and every crop the confirmation tries."""
    sides = [ALIGN_SIDE] + [round(ALIGN_SIDE * f) for f in CROP_FRACTIONS]
    return np.concatenate([_windows(integral, side) for side in sides])


def aligned_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Best normalised correlation of ``a`` and ``b`` over small crops of either (1.0 = same)."""
    a, b = _aligned(a), _aligned(b)
    base_a, base_b = _base(a), _base(b)
    return float(max((_views(a) @ base_b).max(), (_views(b) @ base_a).max()))


def candidate_pairs(
    keys: Sequence[str],
    thumbnails: np.ndarray,
    load_image: Callable[[str], np.ndarray | None],
    candidate_threshold: float = DEFAULT_DUP_CANDIDATE_THRESHOLD,
) -> pd.DataFrame:
    """Pairs (``i < j`` row indices) whose thumbnails are close, with their ``aligned_similarity``.

    ``load_image`` maps a key to its (H, W, 3) uint8 image or None when it cannot be read (its
    pairs then score -1). It is called only for images in a candidate pair.
    """
    pairs = near_pairs(np.asarray(thumbnails, np.float32), candidate_threshold, CANDIDATE_K)
    found = sorted({(min(s, d), max(s, d)) for s, d in zip(pairs.src, pairs.dst) if s != d})
    return pd.DataFrame(
        {
            "i": np.array([i for i, _ in found], np.int64),
            "j": np.array([j for _, j in found], np.int64),
            "similarity": _confirm(found, list(keys), load_image),
        }
    )


def groups_from_pairs(
    keys: Sequence[str], priority, pairs: pd.DataFrame, threshold: float = DEFAULT_DUP_THRESHOLD
) -> pd.DataFrame:
    """Connected components of the pairs at or above ``threshold``; one row per key.

    Returns ``sha256``, ``representative`` (highest ``priority``, ties to the smaller key),
    ``group_size`` and ``dup_score`` (best confirmed similarity to another member; NaN alone).
    """
    keys = list(keys)
    n = len(keys)
    linked = pairs[pairs["similarity"] >= threshold]
    labels = connected_components(n, linked["i"].to_numpy(), linked["j"].to_numpy())
    best = np.full(n, np.nan)
    ends = np.concatenate([linked["i"], linked["j"]]).astype(np.int64)
    sims = np.concatenate([linked["similarity"], linked["similarity"]])
    if len(ends):
        best_by_end = pd.Series(sims).groupby(ends).max()
        best[best_by_end.index.to_numpy()] = best_by_end.to_numpy()
    frame = pd.DataFrame({"sha256": keys, "label": labels, "priority": np.asarray(priority, float)})
    ordered = frame.sort_values(["label", "priority", "sha256"], ascending=[True, False, True])
    representative = ordered.groupby("label")["sha256"].first()
    return pd.DataFrame(
        {
            "sha256": keys,
            "representative": representative.loc[labels].to_numpy(),
            "group_size": np.bincount(labels, minlength=n)[labels],
            "dup_score": best,
        }
    )


def group_near_duplicates(
    keys: Sequence[str],
    thumbnails: np.ndarray,
    load_image: Callable[[str], np.ndarray | None],
    priority: Sequence[float] | np.ndarray,
    threshold: float = DEFAULT_DUP_THRESHOLD,
    candidate_threshold: float = DEFAULT_DUP_CANDIDATE_THRESHOLD,
) -> pd.DataFrame:
    """Group near-duplicate images (``candidate_pairs`` then ``groups_from_pairs``).

    Parameters
    ----------
    keys
        Image keys (sha256), one per row of ``thumbnails``.
    thumbnails
        (N, 108) ``thumbnail_descriptor`` rows.
    load_image
        key -> (H, W, 3) uint8 image, or None when it cannot be read (it then joins no group).
    priority
        Higher wins the representative (``hardness_score``).

    Examples
    --------
    >>> groups = group_near_duplicates(shas, thumbs, lambda k: read_image(paths[k]), hardness)
    >>> groups[groups.group_size > 1].groupby("representative").size()  # doctest: +SKIP
    """
    pairs = candidate_pairs(keys, thumbnails, load_image, candidate_threshold)
    return groups_from_pairs(keys, priority, pairs, threshold)


def _confirm(candidates: list[tuple[int, int]], keys, load_image) -> np.ndarray:
    """Aligned similarity of each candidate pair; each image's crops are built once per side."""
    if not candidates:
        return np.zeros(0)
    involved = sorted({i for pair in candidates for i in pair})
    aligned: dict[int, np.ndarray | None] = {}
    for i in progress(involved, desc="near-duplicate check: reading", unit="img"):
        image = load_image(keys[i])
        aligned[i] = None if image is None else _aligned(image)
    base = {i: _base(im) for i, im in aligned.items() if im is not None}
    scores = np.full(len(candidates), -1.0)
    partners: dict[int, list[tuple[int, int]]] = {}
    for index, (i, j) in enumerate(candidates):
        partners.setdefault(i, []).append((index, j))
        partners.setdefault(j, []).append((index, i))
    for i in progress(sorted(partners), desc="near-duplicate check", unit="img"):
        if aligned[i] is None:
            continue
        others = [(index, j) for index, j in partners[i] if aligned[j] is not None]
        if not others:
            continue
        sims = _views(aligned[i]) @ np.stack([base[j] for _, j in others]).T
        for (index, _), value in zip(others, sims.max(axis=0)):
            scores[index] = max(scores[index], float(value))
    return scores
