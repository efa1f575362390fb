"""Datasets for training: image lists with multi-hot labels and reproducible per-sample augmentation.

Augmentation randomness comes from ``(seed, epoch, index)`` rather than a global RNG, so a run that
is interrupted and resumed, or spread over several workers or GPUs, sees exactly the same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from wood_train.data.imageio import read_image
from wood_train.data.transforms import TrainTransform
from wood_train.data.voc import image_path, load_image_labels, read_class_names, read_split


class ImageListDataset(Dataset):
    """(image tensor, label vector, index) for a list of paths; labels default to all-zero (OoD)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: np.ndarray | None,
        num_classes: int,
        transform: TrainTransform,
        seed: int = 0,
    ):
        self.paths = [Path(p) for p in paths]
        if labels is None:
            labels = np.zeros((len(self.paths), num_classes), dtype=np.float32)
        if len(labels) != len(self.paths):
            raise ValueError(f"{len(self.paths)} images but {len(labels)} labels")
        self.labels = torch.as_tensor(labels, dtype=torch.float32)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int | tuple[int, int]):
        """``index``, or ``(epoch, index)`` to draw the augmentation of that epoch: a loader that
        lives over many epochs (the OoD stream) cannot reach ``set_epoch`` of its workers' copies."""
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        rng = np.random.default_rng([self.seed, epoch, index])
        image = self.transform(read_image(self.paths[index]), rng)
        return image, self.labels[index], index


def voc_classification_dataset(
    voc_root: str | Path,
    split: str,
    transform: TrainTransform,
    seed: int = 0,
    masks: str = "SegmentationClass",
) -> tuple[ImageListDataset, list[str], list[str]]:
    """The labelled in-distribution training set: (dataset, image ids, class names).

    Labels come from ``cls_labels.npy`` when present, else from the ``masks`` folder.
    """
    class_names = read_class_names(voc_root)
    ids = read_split(voc_root, split)
    labels = load_image_labels(voc_root, ids, len(class_names), masks)
    paths = [image_path(voc_root, i) for i in ids]
    return ImageListDataset(paths, labels, len(class_names), transform, seed), ids, class_names


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """The shuffled sample order of one epoch, sharded for DDP (drop the ragged tail)."""
    order = np.random.default_rng([seed, epoch, 7919]).permutation(n)
    usable = len(order) - len(order) % world_size
    return order[:usable][rank::world_size]


def fixed_order_loader(
    dataset,
    order: np.ndarray,
    batch_size: int,
    skip: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
):
    """A DataLoader over full batches of ``order``, skipping the first ``skip`` (exact resume).

    ``pin_memory``: pass ``wood_train.device.pin_memory(device)``, so CUDA copies overlap.
    """
    chunks = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=chunks[skip:],
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
    )


def collate(batch):
    images, labels, indices = zip(*batch)
    return torch.stack(images), torch.stack(labels), torch.as_tensor(indices)
