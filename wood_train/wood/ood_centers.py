"""Class prototypes and hard-OoD centres, computed before W-OoD's first step (WOOD_SPEC section 3).

With the model in eval mode and no augmentation::

    loader = feature_loader(id_paths, size=512, batch_size=64)
    z_id = extract_features(model, loader, out_path=run_dir / "id_features.npy", device=device)
    prototypes = class_prototypes(z_id, id_labels, class_names)            # mu_c, (C, D)
    z_ood = extract_features(model, feature_loader(ood_paths), out_path=..., device=device)
    centers = kmeans_centers(z_ood, k=50, seed=0, keys=ood_keys)          # nu_k, (K, D)

Features stream into a float32 ``.npy`` memmap, so 100k x 2048 features never sit in memory whole;
K-means trains on a seeded sample of at most ``k * max_points_per_centroid`` rows, taken after
sorting rows by ``keys``, so the centres do not depend on the order of the image list (the
reference's centres did: w-ood issue #3).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wood_train.data.imageio import read_image
from wood_train.data.transforms import normalize_image
from wood_train.errors import ConfigError, DataError
from wood_train.progress import progress

# WOOD_SPEC section 1: the training crop side; features are taken at the size the model trains at.
FEATURE_IMAGE_SIZE = 512
# WOOD_SPEC section 3: reference K.
DEFAULT_NUM_CENTERS = 50
# Lloyd iterations: faiss's default (the reference runs 10, starting from the first K rows).
DEFAULT_KMEANS_ITERATIONS = 25
# faiss's own default cap: K-means trains on at most K * 256 rows (12,800 for K = 50).
MAX_POINTS_PER_CENTROID = 256
# Weight of the scaled identity in the shrunk shared covariance (Mahalanobis option, section 3).
DEFAULT_SHRINKAGE = 0.1
# Rows read from a (memmapped) feature matrix at a time.
ROW_CHUNK = 4096
# Images per forward pass of the feature extraction (the reference runs one at a time).
DEFAULT_FEATURE_BATCH = 64


class FeatureImageDataset(Dataset):
    """Images from a list of paths as normalised ``(3, size, size)`` tensors, with their index.

    Each image is resized so its long side is ``size`` (no distortion), normalised, and placed in
    the centre of a zero canvas (zero = the ImageNet mean after normalisation), as the training
    crops are zero padded. Decoding goes through ``read_image``; a file that cannot be decoded
    raises ``ImageDecodeError`` naming it (skipping would misalign features and paths).
    """

    def __init__(self, paths: Sequence[str | Path], size: int = FEATURE_IMAGE_SIZE):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.paths = [Path(p) for p in paths]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.paths[index])
        height, width = image.shape[:2]
        scale = self.size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        if (new_h, new_w) != (height, width):
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        canvas = torch.zeros((3, self.size, self.size))
        top, left = (self.size - new_h) // 2, (self.size - new_w) // 2
        canvas[:, top : top + new_h, left : left + new_w] = normalize_image(image)
        return canvas, index


def feature_loader(
    paths: Sequence[str | Path],
    size: int = FEATURE_IMAGE_SIZE,
    batch_size: int = DEFAULT_FEATURE_BATCH,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A sequential, batched loader over ``FeatureImageDataset`` for ``extract_features``."""
    return DataLoader(
        FeatureImageDataset(paths, size),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def extract_features(
    model: nn.Module,
    loader: DataLoader,
    out_path: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """GAP features z of every image the loader yields, (N, D) float32, row i = dataset item i.

    The model runs in eval mode under ``torch.inference_mode`` (its mode is restored after). Each
    batch is ``images`` or ``(images, dataset_indices, ...)``; with indices, rows land at their
    index, so a shuffled loader gives the same matrix. With ``out_path`` the rows stream into a
    float32 ``.npy`` memmap (written to a temporary name and renamed when complete) and the
    result is that file opened read-only, so memory stays bounded.

    Raises
    ------
    ValueError
        If the loader does not yield every item exactly once (``drop_last``, a sampler).
    """
    module = getattr(model, "module", model)  # DDP wraps the model
    num_rows, dim = len(loader.dataset), module.feature_dim
    out_path = Path(out_path) if out_path is not None else None
    tmp = out_path.with_name(out_path.name + ".tmp") if out_path is not None else None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        features = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=(num_rows, dim)
        )
    else:
        features = np.empty((num_rows, dim), dtype=np.float32)
    seen = np.zeros(num_rows, dtype=np.int64)
    was_training = module.training
    module.eval()
    try:
        offset = 0
        with torch.inference_mode():
            for batch in progress(loader, total=len(loader), desc="features", unit="batch"):
                if isinstance(batch, (tuple, list)):
                    images, index = batch[0], torch.as_tensor(batch[1]).numpy()
                    if index.shape != (len(images),) or index.dtype.kind not in "iu":
                        raise ValueError(
                            "a batch's second element must be the dataset indices of its images "
                            f"(FeatureImageDataset returns them), got {index.shape} {index.dtype}"
                        )
                else:
                    images, index = batch, np.arange(offset, offset + len(batch))
                offset += len(images)
                _, z = module.forward_features(images.to(device, non_blocking=True))
                features[index] = z.float().cpu().numpy()
                np.add.at(seen, index, 1)
        if not (seen == 1).all():
            missing, repeated = int((seen == 0).sum()), int((seen > 1).sum())
            raise ValueError(
                f"the loader yielded {missing} of {num_rows} images never and {repeated} more "
                "than once; use a sequential loader without drop_last (see feature_loader)"
            )
    except BaseException:
        if tmp is not None:
            del features
            tmp.unlink(missing_ok=True)
        raise
    finally:
        module.train(was_training)
    if out_path is None:
        return features
    features.flush()
    del features
    os.replace(tmp, out_path)
    return np.load(out_path, mmap_mode="r")


def _check_labels(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be (N, C) with N = {features.shape[0]} feature rows, got {labels.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be multi-hot 0/1 image-level labels")
    return labels.astype(np.float64)


def class_prototypes(
    features: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None
) -> np.ndarray:
    r"""Class prototypes: the mean ID feature of each class, (C, D) float32.

    .. math::  \mu_c = \frac{\sum_i y_{ic} z_i}{\sum_i y_{ic}}

    A multi-label image counts for each of its classes (WOOD_SPEC section 3). Rows are read in
    chunks, so ``features`` may be a memmap larger than memory.

    Parameters
    ----------
    features : (N, D) array of GAP features of the ID training images
    labels : (N, C) multi-hot array
    class_names : names for the error message

    Raises
    ------
    ValueError
        Naming every class without an image (its prototype would be undefined).
    """
    labels = _check_labels(features, labels)
    counts = labels.sum(axis=0)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        names = [class_names[c] if class_names is not None else str(c) for c in empty]
        raise DataError(
            f"class(es) {names} (index {empty.tolist()}) have no image in the ID set; "
            "every class needs at least one image for its prototype"
        )
    sums = np.zeros((labels.shape[1], features.shape[1]), dtype=np.float64)
    for start in range(0, features.shape[0], ROW_CHUNK):
        chunk = np.asarray(features[start : start + ROW_CHUNK], dtype=np.float64)
        sums += labels[start : start + ROW_CHUNK].T @ chunk
    return (sums / counts[:, None]).astype(np.float32)


def _key_order(keys: Sequence[str], num_rows: int) -> np.ndarray:
    keys = np.asarray([str(k) for k in keys])
    if keys.shape != (num_rows,):
        raise ValueError(f"keys must name each of the {num_rows} feature rows, got {keys.shape[0]}")
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if repeated.size:
        raise ValueError(
            f"keys must be unique to fix the row order; repeated: {ordered[repeated[:5]].tolist()}"
        )
    return order


def _rows(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``features[rows]`` as float32, reading the (memmapped) matrix in ascending row order."""
    ascending = np.argsort(rows, kind="stable")
    out = np.empty((rows.size, features.shape[1]), dtype=np.float32)
    for start in range(0, rows.size, ROW_CHUNK):
        pick = ascending[start : start + ROW_CHUNK]
        out[pick] = features[rows[pick]]
    return out


def kmeans_plus_plus(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    r"""Seeded k-means++ initial centres, (k, D) float32 (Arthur and Vassilvitskii, 2007).

    The first centre is a uniformly drawn row; each next one is row j with probability
    :math:`D(j)^2 / \sum_i D(i)^2`, D the distance to the nearest centre so far. Far better than
    the first K rows (the reference) or K random rows (faiss), which often put two centres in one
    cluster and none in another.
    """
    rng = np.random.default_rng(seed)
    points64 = points.astype(np.float64)
    chosen = [int(rng.integers(points.shape[0]))]
    nearest = ((points64 - points64[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = nearest.sum()
        weights = nearest / total if total > 0 else None  # all rows on centres: uniform
        chosen.append(int(rng.choice(points.shape[0], p=weights)))
        nearest = np.minimum(nearest, ((points64 - points64[chosen[-1]]) ** 2).sum(1))
    return points[chosen].astype(np.float32)


def kmeans_centers(
    features: np.ndarray,
    k: int = DEFAULT_NUM_CENTERS,
    seed: int = 0,
    niter: int = DEFAULT_KMEANS_ITERATIONS,
    keys: Sequence[str] | None = None,
    max_points_per_centroid: int = MAX_POINTS_PER_CENTROID,
) -> np.ndarray:
    r"""K-means centres :math:`\nu_k` of the hard-OoD features, (K, D) float32, order-independent.

    Lloyd's algorithm (faiss) from a seeded k-means++ start, minimising
    :math:`\sum_j \min_k \|z_j - \nu_k\|^2`. To make the
    result a function of the set of images, not of the list order: rows are sorted by ``keys``
    (one unique key per row: sha256 or path), a seeded sample of at most
    ``k * max_points_per_centroid`` of them is read (bounded memory on a memmap), faiss runs
    seeded, and the centres are returned in lexicographic order of their coordinates.

    Parameters
    ----------
    features : (N, D) array or memmap of OoD GAP features, N >= k
    k : number of centres (reference 50)
    seed : seeds the row sample and faiss's initialisation
    niter : Lloyd iterations
    keys : one unique string per row; without keys the row order is taken as given
    max_points_per_centroid : cap on training rows per centre

    Returns
    -------
    (k, D) float32 array
    """
    num_rows, dim = features.shape
    if num_rows < k:
        raise ConfigError(f"K-means with k={k} needs at least {k} OoD images, got {num_rows}")
    order = np.arange(num_rows) if keys is None else _key_order(keys, num_rows)
    num_train = min(num_rows, k * max_points_per_centroid)
    if num_train < num_rows:
        sample = np.random.default_rng(seed).choice(num_rows, num_train, replace=False)
        order = order[np.sort(sample)]
    train = np.ascontiguousarray(_rows(features, order))
    kmeans = faiss.Kmeans(
        dim,
        k,
        niter=niter,
        seed=seed,
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,  # few OoD images is a warning in faiss; we allow it
        verbose=False,
    )
    kmeans.train(train, init_centroids=kmeans_plus_plus(train, k, seed))
    centers = np.asarray(kmeans.centroids, dtype=np.float32).copy()
    return centers[np.lexsort(centers.T[::-1])]


def _nearest(features: np.ndarray, points: np.ndarray) -> np.ndarray:
    squared = (features**2).sum(1)[:, None] - 2 * features @ points.T + (points**2).sum(1)[None]
    return squared.argmin(axis=1)


def shared_precision(
    features: np.ndarray,
    labels: np.ndarray,
    prototypes: np.ndarray,
    shrinkage: float = DEFAULT_SHRINKAGE,
    ood_features: np.ndarray | None = None,
    ood_centers: np.ndarray | None = None,
) -> np.ndarray:
    r"""Precision matrix of the shared covariance, for ``distance_loss(metric="mahalanobis")``.

    .. math::

        \Sigma = \frac{1}{M} \sum_{(i,c):\, y_{ic}=1} (z_i - \mu_c)(z_i - \mu_c)^\top,
        \qquad
        \Sigma_s = (1 - s)\,\Sigma + s\,\frac{\mathrm{tr}\,\Sigma}{D}\, I,
        \qquad P = \Sigma_s^{-1}

    M counts (image, class) pairs, so a multi-label image contributes once per class. With
    ``ood_features`` and ``ood_centers`` each OoD feature also contributes its residual to its
    nearest centre: the reference pools the ID classes and the OoD clusters into one covariance
    the same way, and the trainer passes both. The shrinkage is ours: the reference
    pseudo-inverts the plain covariance; shrinking toward the scaled identity keeps
    :math:`\Sigma_s` invertible with fewer samples than dimensions (D = 2048).

    Returns
    -------
    (D, D) float32 symmetric positive definite array
    """
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    labels = _check_labels(features, labels)
    prototypes = np.asarray(prototypes, dtype=np.float64)
    dim = features.shape[1]
    scatter, count = np.zeros((dim, dim)), 0
    for start in range(0, features.shape[0], ROW_CHUNK):
        chunk = np.asarray(features[start : start + ROW_CHUNK], dtype=np.float64)
        image, cls = np.nonzero(labels[start : start + ROW_CHUNK])
        residual = chunk[image] - prototypes[cls]
        scatter += residual.T @ residual
        count += residual.shape[0]
    if (ood_features is None) != (ood_centers is None):
        raise ValueError("pass both ood_features and ood_centers, or neither")
    if ood_features is not None:
        centers = np.asarray(ood_centers, dtype=np.float64)
        for start in range(0, ood_features.shape[0], ROW_CHUNK):
            chunk = np.asarray(ood_features[start : start + ROW_CHUNK], dtype=np.float64)
            residual = chunk - centers[_nearest(chunk, centers)]
            scatter += residual.T @ residual
            count += residual.shape[0]
    if count == 0:
        raise DataError("no labelled image: the shared covariance needs at least one")
    covariance = scatter / count
    scale = np.trace(covariance) / dim
    shrunk = (1 - shrinkage) * covariance + shrinkage * scale * np.eye(dim)
    try:
        factor = np.linalg.cholesky(shrunk)
    except np.linalg.LinAlgError:
        raise DataError(
            "the shared covariance is singular (features do not vary around their prototypes, "
            f"or shrinkage={shrinkage} is too small for {count} samples in {dim} dimensions)"
        ) from None
    inverse_factor = np.linalg.inv(factor)
    precision = inverse_factor.T @ inverse_factor
    return ((precision + precision.T) / 2).astype(np.float32)
