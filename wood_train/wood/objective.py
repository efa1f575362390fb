"""What a W-OoD step needs besides the ID batch: prototypes, centres, precision, the OoD stream.

``WoodObjective`` holds state only; the step itself (climb, BCE, L_dist, L_ood) is written out in
``wood_train.train.train_step``. ``prepare_wood`` runs once before the first step (WOOD_SPEC
section 3): with the model in eval mode and no augmentation it extracts the GAP features of every
ID training image and every hard-OoD image (batched, streamed to memmaps in the run folder), then
computes the class prototypes mu_c, the K-means centres nu_k and, for the Mahalanobis option, the
shared precision. Under torchrun rank 0 computes them and broadcasts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wood_train import distributed
from wood_train.data.datasets import ImageListDataset, collate
from wood_train.data.transforms import TrainTransform
from wood_train.data.voc import image_path, load_image_labels, read_split
from wood_train.device import pin_memory
from wood_train.errors import ConfigError
from wood_train.manifest.ood_list import OodSet
from wood_train.wood.losses import DistanceTargets, distance_targets
from wood_train.wood.ood_centers import (
    class_prototypes,
    extract_features,
    feature_loader,
    kmeans_centers,
    shared_precision,
)


class WoodObjective:
    """W-OoD's state: prototypes, centres, precision (``targets`` for ``distance_loss``), the
    OoD batch stream and the ignored classes. Saved in every checkpoint for an exact resume."""

    def __init__(self, config, class_names: list[str], ood: OodSet, device: torch.device):
        self.config = config
        self.class_names = class_names
        self.device = device
        transform = TrainTransform(config.resize_long, config.crop, config.hflip)
        self.ood_dataset = ImageListDataset(
            ood.paths, None, len(class_names), transform, config.seed
        )
        self.ood_keys = [str(p) for p in ood.paths]  # K-means rows sorted by key, not list
        self.ignore = [class_names.index(c) for c in config.ignore_classes]
        self.prototypes = self.centers = self.precision = None
        self.targets: DistanceTargets | None = None
        self.batches_drawn = 0
        self._stream = None

    # -- prototypes and centres -------------------------------------------------------------
    def refresh(self, model) -> None:
        """Recompute mu_c (ID prototypes) and nu_k (OoD K-means centres) with the current model."""
        config = self.config
        dim = model.feature_dim
        tensors = [torch.zeros(len(self.class_names), dim), torch.zeros(config.num_centers, dim)]
        if config.distance == "mahalanobis":
            tensors.append(torch.zeros(dim, dim))
        if not distributed.is_distributed() or torch.distributed.get_rank() == 0:
            tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in self._compute(model)]
        tensors = [distributed.broadcast(t.to(self.device)) for t in tensors]
        self._set(tensors[0], tensors[1], tensors[2] if len(tensors) > 2 else None)

    def _set(self, prototypes, centers, precision) -> None:
        self.prototypes, self.centers, self.precision = prototypes, centers, precision
        self.targets = distance_targets(prototypes, centers, self.config.distance, precision)

    def _compute(self, model) -> list[np.ndarray]:
        config = self.config
        size = config.feature_size or config.crop
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ids = read_split(config.voc_root, config.train_split)
        id_paths = [image_path(config.voc_root, i) for i in ids]
        labels = load_image_labels(config.voc_root, ids, len(self.class_names), config.masks)
        workers = config.num_workers

        def features(paths, name):
            loader = feature_loader(
                paths, size, config.feature_batch_size, workers, pin_memory(self.device)
            )
            return extract_features(model, loader, out_path=out / name, device=self.device)

        z_id = features(id_paths, "id_features.npy")
        z_ood = features(self.ood_dataset.paths, "ood_features.npy")
        prototypes = class_prototypes(z_id, labels, self.class_names)
        centers = kmeans_centers(z_ood, k=config.num_centers, seed=config.seed, keys=self.ood_keys)
        arrays = [prototypes, centers]
        if config.distance == "mahalanobis":
            # as the reference: one covariance of the ID residuals to their class prototypes
            # and the OoD residuals to their nearest centre (plus our documented shrinkage)
            arrays.append(
                shared_precision(z_id, labels, prototypes, ood_features=z_ood, ood_centers=centers)
            )
        return [np.asarray(a, dtype=np.float32) for a in arrays]

    # -- the OoD batch stream -------------------------------------------------------------
    def _batches_from(self, drawn: int):
        """OoD batches in a seeded order, starting after ``drawn`` batches (exact resume).

        One loader serves every round (a round is one pass over the OoD set), so its worker
        processes start once per run, not once per round; each sample carries its round's
        augmentation epoch.
        """
        config = self.config
        n, size = len(self.ood_dataset), config.ood_batch_size
        per_round = max(1, n // size)
        first_round, skip = divmod(drawn, per_round)

        def batches():
            round_, start = first_round, skip
            while True:
                order = np.random.default_rng([config.seed, round_, 104729]).permutation(n)
                order = np.resize(order, per_round * size) if n < size else order
                epoch = 100_000 + round_
                for b in range(start, per_round):
                    yield [(epoch, int(i)) for i in order[b * size : (b + 1) * size]]
                round_, start = round_ + 1, 0

        loader = torch.utils.data.DataLoader(
            self.ood_dataset,
            batch_sampler=batches(),
            num_workers=config.num_workers,
            collate_fn=collate,
            pin_memory=pin_memory(self.device),
        )
        yield from (images for images, _, _ in loader)

    def next_batch(self, device) -> torch.Tensor:
        """The next OoD batch (normalised, augmented as the ID images)."""
        if self._stream is None:
            self._stream = self._batches_from(self.batches_drawn)
        self.batches_drawn += 1
        return next(self._stream).to(device, non_blocking=True)

    # -- checkpointing --------------------------------------------------------------------
    def state(self) -> dict:
        def cpu(t):
            return None if t is None else t.cpu()

        return {
            "prototypes": cpu(self.prototypes),
            "centers": cpu(self.centers),
            "precision": cpu(self.precision),
            "batches_drawn": self.batches_drawn,
        }

    def load_state(self, state: dict) -> None:
        def dev(t):
            return None if t is None else t.to(self.device)

        if state["prototypes"] is not None:
            self._set(dev(state["prototypes"]), dev(state["centers"]), dev(state["precision"]))
        self.batches_drawn = state["batches_drawn"]
        self._stream = None


def prepare_wood(
    config, model, class_names: list[str], ood: OodSet, device, state: dict | None = None
) -> WoodObjective:
    """The W-OoD state for training on the validated OoD set ``ood``.

    Prototypes and centres are computed before the first step, or restored from ``state`` (a
    resumable checkpoint's) instead of recomputed. The ablation's ``ood_as_negatives`` needs none.
    """
    unknown = [c for c in config.ignore_classes if c not in class_names]
    if unknown:
        raise ConfigError(f"--ignore-classes {unknown} are not among the classes {class_names}")
    objective = WoodObjective(config, class_names, ood, device)
    if state is not None:
        objective.load_state(state)
    elif not config.ood_as_negatives:
        objective.refresh(model)
    return objective
