"""`hardood train`: the CAM classifier baseline, and W-OoD when a hard-OoD list is given.

One visible loop (WOOD_SPEC sections 1 and 3): data -> forward -> BCE (+ lambda L_dist + beta L_ood)
-> backward -> step -> log -> checkpoint. Runs on one CPU/GPU or under ``torchrun`` (DDP).
Interrupted runs resume from ``last.pt`` and end with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from wood_train import config as cfg
from wood_train import distributed
from wood_train.data.datasets import epoch_order, fixed_order_loader, voc_classification_dataset
from wood_train.data.transforms import TrainTransform
from wood_train.data.voc import resolve_masks
from wood_train.device import autocast, pin_memory, resolve_device
from wood_train.errors import ConfigError, DataError, OutputExistsError
from wood_train.model.cam_net import build_cam_net
from wood_train.model.checkpoint import load_cam_net, read_checkpoint, save_checkpoint
from wood_train.progress import progress
from wood_train.run_log import RunLog
from wood_train.train_config import TrainConfig


@dataclass
class TrainResult:
    checkpoint: Path
    weights_sha256: str
    selected_epoch: int
    val_metrics: dict
    seconds: float
    model: torch.nn.Module | None = field(default=None, repr=False)  # this rank's final weights


def poly_lr(base: float, step: int, max_step: int, power: float) -> float:
    return base * (1 - step / max_step) ** power


def build_model(config: TrainConfig, num_classes: int, device: torch.device):
    if config.init_checkpoint:
        model, meta = load_cam_net(config.init_checkpoint, frozen_bn=config.frozen_bn)
        if model.num_classes != num_classes:
            raise DataError(
                f"{config.init_checkpoint}: has {model.num_classes} classes, data has {num_classes}"
            )
    else:
        model = build_cam_net(
            config.backbone,
            num_classes,
            config.output_stride,
            config.frozen_bn,
            config.backbone_weights,
        )
    return model.to(device)


# Settings that do not change the trained weights; a run moved to another folder is still reused.
_NOT_IN_RUN_KEY = ("out_dir", "num_workers", "device", "log_every", "checkpoint_every")


def _run_key(config: TrainConfig) -> str:
    return cfg.config_hash(
        cfg.replace(
            config, **{k: TrainConfig.__dataclass_fields__[k].default for k in _NOT_IN_RUN_KEY}
        )
    )


def train(config: TrainConfig) -> TrainResult:
    """Train per ``config``; returns the selected checkpoint. Safe to re-run: it resumes or reuses."""
    if config.voc_root is None:
        raise ConfigError("voc_root is required (the VOC-layout dataset to train on)")
    # the mask folder actually read goes into the run key and config.yaml, never "auto"
    config = cfg.replace(config, masks=resolve_masks(config.voc_root, config.masks))
    rank, world_size = distributed.setup()
    device = resolve_device(config.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", distributed.local_rank())
    out = Path(config.out_dir)
    final_path, last_path = out / "model.pt", out / "last.pt"
    run_key = _run_key(config)
    if final_path.is_file() and read_checkpoint(final_path).get("run_key") == run_key:
        meta = read_checkpoint(final_path)
        return TrainResult(
            final_path,
            meta["weights_sha256"],
            meta["selected_epoch"],
            meta.get("val_metrics", {}),
            0.0,
        )

    torch.manual_seed(config.seed)
    transform = TrainTransform(config.resize_long, config.crop, config.hflip)
    dataset, _ids, class_names = voc_classification_dataset(
        config.voc_root, config.train_split, transform, config.seed, config.masks
    )
    model = build_model(config, len(class_names), device)
    backbone_params, head_params = model.parameter_groups(config.freeze_stem)
    optimizer = torch.optim.SGD(
        [
            {"params": backbone_params, "lr_mult": 1.0},
            {"params": head_params, "lr_mult": config.classifier_lr_mult},
        ],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    step, start_epoch, best = 0, 0, {"score": -math.inf, "epoch": -1, "metrics": {}}
    resume = read_checkpoint(last_path) if last_path.is_file() else None
    if resume is not None:
        if resume.get("run_key") != run_key:
            raise OutputExistsError(
                f"{last_path}: belongs to a run with another config; use a new --out-dir or delete it"
            )
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        step, start_epoch, best = resume["step"], resume["epoch"], resume["best"]
    wood = None
    if config.uses_ood:
        from wood_train.wood.objective import (
            prepare_wood,  # W-OoD only: faiss and the manifest reader
        )

        # on resume: the saved prototypes, centres and OoD stream position, not recomputed ones
        wood = prepare_wood(
            config, model, class_names, device, resume.get("wood") if resume else None
        )
    ddp_model = distributed.wrap(model, device)
    steps_per_epoch = (
        len(epoch_order(len(dataset), config.seed, 0, rank, world_size)) // config.batch_size
    )
    if steps_per_epoch == 0:
        raise DataError(
            f"{config.train_split}: {len(dataset)} images are fewer than one batch of {config.batch_size}"
        )
    max_step = steps_per_epoch * config.epochs
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_config(config, out / "config.yaml", class_names=class_names)
    log = RunLog(out / "train_log.csv", enabled=rank == 0, resume_step=step)
    started = time.time()

    def checkpoint(path: Path, epoch: int, **extra) -> str:
        return save_checkpoint(
            path, model, class_names, cfg.to_dict(config), run_key=run_key, step=step, epoch=epoch,
            optimizer=optimizer.state_dict(), best=best, wood=wood.state() if wood else None, **extra,
        )  # fmt: skip

    for epoch in range(start_epoch, config.epochs):
        dataset.set_epoch(epoch)
        order = epoch_order(len(dataset), config.seed, epoch, rank, world_size)
        skip = step - epoch * steps_per_epoch
        loader = fixed_order_loader(
            dataset, order, config.batch_size, skip, config.num_workers, pin_memory(device)
        )
        model.train()
        bar = progress(
            loader,
            total=steps_per_epoch,
            initial=skip,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="step",
        )
        tick = time.time()
        for images, labels, _ in bar:
            for group in optimizer.param_groups:
                group["lr"] = (
                    poly_lr(config.lr, step, max_step, config.poly_power) * group["lr_mult"]
                )
            images, labels = (
                images.to(device, non_blocking=True),
                labels.to(device, non_blocking=True),
            )
            n_id = images.shape[0]
            terms = {}
            with autocast(device, config.amp, training=True):
                if wood is None:
                    logits = ddp_model(images)
                    loss = terms["bce"] = F.multilabel_soft_margin_loss(logits, labels)
                else:
                    ood_images = wood.next_batch(device)
                    if not config.ood_as_negatives:
                        ood_images = wood.climb(model, ood_images)  # x' = x + eps * g / max|g|
                    logits, z = ddp_model(torch.cat([images, ood_images]), with_features=True)
                    loss, terms = wood.loss(logits, z, labels, n_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % config.log_every == 0 or step == max_step:
                seconds = time.time() - tick
                rate = config.log_every * n_id * world_size / max(seconds, 1e-9)
                row = {"step": step, "epoch": epoch, "loss": loss.item(), **{k: float(v.detach()) for k, v in terms.items()},
                       "lr": optimizer.param_groups[0]["lr"], "images_per_s": rate}  # fmt: skip
                log.write(row)
                bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}")
                tick = time.time()
            if rank == 0 and step % config.checkpoint_every == 0 and step % steps_per_epoch:
                checkpoint(last_path, epoch)
        if wood is not None and config.refresh_every and (epoch + 1) % config.refresh_every == 0:
            wood.refresh(model)
        metrics = _validate(model, config, class_names, device) if rank == 0 else {}
        score = metrics.get("selection_score", float(epoch))
        if rank == 0:
            log.write_epoch({"epoch": epoch, **metrics})
            if score >= best["score"]:
                best = {"score": score, "epoch": epoch, "metrics": metrics}
                checkpoint(out / "best.pt", epoch)
            checkpoint(last_path, epoch + 1)
        distributed.barrier()

    seconds = time.time() - started
    digest = ""
    if rank == 0:
        selected, _ = load_cam_net(out / "best.pt")
        model.load_state_dict(selected.state_dict())
        digest = checkpoint(
            final_path, best["epoch"], selected_epoch=best["epoch"], val_metrics=best["metrics"]
        )
        (out / "summary.json").write_text(json.dumps(
            {"checkpoint": str(final_path), "weights_sha256": digest, "selected_epoch": best["epoch"],
             "val_metrics": best["metrics"], "seconds": seconds, "class_names": class_names}, indent=2))  # fmt: skip
    distributed.barrier()
    distributed.cleanup()
    return TrainResult(final_path, digest, best["epoch"], best["metrics"], seconds, model)


def _validate(model, config: TrainConfig, class_names: list[str], device) -> dict:
    """Held-out metrics per epoch: classification mAP, and CAM mIoU when the split has masks."""
    if not config.val_split:
        return {}
    from wood_train.validation import validate  # imports the CAM/eval stack only when needed

    return validate(model, config, class_names, device)
