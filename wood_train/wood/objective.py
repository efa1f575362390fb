"""What W-OoD training needs besides the ID batch: the OoD stream, prototypes, centres, the loss.

``prepare_wood`` runs once before the first step (WOOD_SPEC section 3): with the model in eval mode
and no augmentation it extracts the GAP features of every ID training image and every hard-OoD
image (batched, streamed to memmaps in the run folder), then computes the class prototypes mu_c
and the K-means centres nu_k. Under torchrun rank 0 computes them and broadcasts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wood_train import distributed
from wood_train.data.datasets import ImageListDataset, fixed_order_loader
from wood_train.data.transforms import TrainTransform
from wood_train.data.voc import image_path, load_image_labels, read_split
from wood_train.device import pin_memory
from wood_train.errors import ConfigError
from wood_train.manifest.ood_list import load_ood_list
from wood_train.wood.losses import adversarial_climb, distance_loss, keep_mask, ood_loss
from wood_train.wood.ood_centers import (
    class_prototypes,
    extract_features,
    feature_loader,
    kmeans_centers,
    shared_precision,
)


class WoodObjective:
    """The W-OoD side of a training step; the loop calls ``next_batch``, ``climb`` and ``loss``."""

    def __init__(self, config, class_names: list[str], ood_paths: list[Path], device: torch.device):
        self.config = config
        self.class_names = class_names
        self.device = device
        transform = TrainTransform(config.resize_long, config.crop, config.hflip)
        self.ood_dataset = ImageListDataset(
            ood_paths, None, len(class_names), transform, config.seed
        )
        self.ood_keys = [str(p) for p in ood_paths]
        self.ignore = [class_names.index(c) for c in config.ignore_classes]
        self.prototypes = self.centers = self.precision = None
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
        self.prototypes, self.centers = tensors[0], tensors[1]
        self.precision = tensors[2] if len(tensors) > 2 else None

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
        if len(z_ood) < config.num_centers:
            raise ConfigError(
                f"{config.ood_manifest}: {len(z_ood)} OoD images are fewer than num_centers={config.num_centers}"
            )
        prototypes = class_prototypes(z_id, labels, self.class_names)
        centers = kmeans_centers(z_ood, k=config.num_centers, seed=config.seed, keys=self.ood_keys)
        arrays = [prototypes, centers]
        if config.distance == "mahalanobis":
            arrays.append(shared_precision(z_id, labels, prototypes))
        return [np.asarray(a, dtype=np.float32) for a in arrays]

    # -- the OoD batch stream -------------------------------------------------------------
    def _batches_from(self, drawn: int):
        """OoD batches in a seeded order, starting after ``drawn`` batches (exact resume)."""
        config = self.config
        n, size = len(self.ood_dataset), config.ood_batch_size
        per_round = max(1, n // size)
        round_, skip = divmod(drawn, per_round)
        while True:
            self.ood_dataset.set_epoch(100_000 + round_)
            order = np.random.default_rng([config.seed, round_, 104729]).permutation(n)
            order = np.resize(order, per_round * size) if n < size else order
            loader = fixed_order_loader(
                self.ood_dataset, order, size, skip, config.num_workers, pin_memory(self.device)
            )
            yield from (images for images, _, _ in loader)
            round_, skip = round_ + 1, 0

    def next_batch(self, device) -> torch.Tensor:
        if self._stream is None:
            self._stream = self._batches_from(self.batches_drawn)
        self.batches_drawn += 1
        return next(self._stream).to(device, non_blocking=True)

    # -- the step -------------------------------------------------------------------------
    def climb(self, model, x_ood: torch.Tensor) -> torch.Tensor:
        """x' = x + eps * g / max|g| toward the most confident class (spec section 3)."""
        return adversarial_climb(model, x_ood, self.config.adv_eps)

    def loss(self, logits, z, labels, n_id: int):
        """L = BCE + lambda * L_dist + beta * L_ood; returns (loss, per-term dict for the log)."""
        config = self.config
        logits_id, logits_ood = logits[:n_id], logits[n_id:]
        if config.ood_as_negatives:
            targets = torch.cat([labels, torch.zeros_like(logits_ood)])
            bce = F.multilabel_soft_margin_loss(logits, targets)
            return bce, {"bce": bce}
        bce = F.multilabel_soft_margin_loss(logits_id, labels)
        l_dist, _ = distance_loss(
            z[:n_id].float(),
            labels,
            self.prototypes,
            self.centers,
            config.quantile,
            config.distance,
            self.precision,
        )
        l_ood = ood_loss(logits_ood, keep_mask(logits_ood, self.ignore))
        loss = bce + config.wood_lambda * l_dist + config.wood_beta * l_ood
        return loss, {"bce": bce, "l_dist": l_dist, "l_ood": l_ood}

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

        self.prototypes, self.centers = dev(state["prototypes"]), dev(state["centers"])
        self.precision = dev(state["precision"])
        self.batches_drawn = state["batches_drawn"]
        self._stream = None


def prepare_wood(
    config, model, class_names: list[str], device, state: dict | None = None
) -> WoodObjective:
    """Validate the hard-OoD list, then compute prototypes and centres before the first step.

    ``state`` (from a resumable checkpoint) restores them instead of recomputing.
    """
    ood_paths = load_ood_list(
        config.ood_manifest, config.ood_image_root, expected_classes=class_names
    )
    unknown = [c for c in config.ignore_classes if c not in class_names]
    if unknown:
        raise ConfigError(f"ignore_classes {unknown} are not among the classes {class_names}")
    objective = WoodObjective(config, class_names, ood_paths, device)
    if state is not None:
        objective.load_state(state)
    elif not config.ood_as_negatives:
        objective.refresh(model)
    return objective
