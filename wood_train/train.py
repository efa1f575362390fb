"""`hardood train`: the CAM classifier baseline, and W-OoD when a hard-OoD list is given.

One visible loop (WOOD_SPEC sections 1 and 3): data -> ``train_step`` (forward, BCE, + lambda L_dist
+ beta L_ood, backward, step) -> log -> checkpoint. Runs on one CPU/GPU or under ``torchrun``.

Safe to re-run: the run key hashes the config and the contents of its inputs (the ID training
list and labels, the OoD manifest, the init checkpoint), so the same command on the same inputs
resumes an interrupted run (to the same weights) or reuses a finished one, and a changed input
trains anew. Epochs are numbered from 1 everywhere (console, train_log.csv, epochs.jsonl,
summary.json, checkpoints). A NaN or inf in a loss term, the gradient or the weights stops the run
before anything diverged is saved or selected.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wood_train import config as cfg
from wood_train import distributed
from wood_train.data import voc
from wood_train.data.datasets import epoch_order, fixed_order_loader, voc_classification_dataset
from wood_train.data.transforms import TrainTransform
from wood_train.device import autocast, pin_memory, resolve_device
from wood_train.errors import ConfigError, DataError, DivergedError, OutputExistsError
from wood_train.model.cam_net import build_cam_net
from wood_train.model.checkpoint import load_cam_net, read_checkpoint, save_checkpoint
from wood_train.model.finite import nonfinite_weights
from wood_train.progress import progress
from wood_train.run_log import RunLog
from wood_train.train_config import TrainConfig
from wood_train.wood.losses import (
    adversarial_climb,
    classification_loss,
    distance_loss,
    keep_mask,
    ood_loss,
)

# The loss terms a divergence message names, by their log column.
LOSS_TERMS = {"bce": "BCE", "l_dist": "L_dist", "l_ood": "L_ood", "loss": "the total loss"}


@dataclass
class TrainResult:
    checkpoint: Path
    weights_sha256: str
    selected_epoch: int  # 1-based
    val_metrics: dict
    seconds: float
    status: str = "trained"  # "trained", "resumed" (from last.pt) or "reused" (a finished run)
    resumed_from_step: int = 0
    ood_set: dict | None = None  # what the run recorded about its OoD set (W-OoD only)
    model: torch.nn.Module | None = field(default=None, repr=False)  # this rank's final weights


def poly_lr(base: float, step: int, max_step: int, power: float) -> float:
    return base * (1 - step / max_step) ** power


def train_step(model, ddp_model, optimizer, images, labels, x_ood, wood, config, step: int) -> dict:
    """One optimisation step; returns the loss, its terms and the distance statistics.

    - Baseline (WOOD_SPEC section 1, ``x_ood`` None): L = BCE(f(x), y).
    - W-OoD (section 3): climb the OoD batch toward its most confident class, one forward over
      the ID batch and the climbed OoD batch, L = BCE + lambda * L_dist + beta * L_ood.
    - Ablation ``ood_as_negatives``: the OoD batch joins BCE with all-zero targets, nothing else.

    ``model`` is the bare CamNet (the climb must not start a DDP all-reduce), ``ddp_model`` the
    one that trains; ``wood`` holds the prototypes/centres (``wood.targets``) and ``wood.ignore``.
    Raises ``DivergedError`` (before the optimizer step) when a term or the gradient is not finite.
    """
    n_id = images.shape[0]
    with autocast(images.device, config.amp, training=True):
        if x_ood is None:
            loss = bce = classification_loss(ddp_model(images), labels)
            terms = {"bce": bce}
        elif config.ood_as_negatives:
            logits = ddp_model(torch.cat([images, x_ood]))
            negatives = labels.new_zeros(x_ood.shape[0], labels.shape[1])
            loss = bce = classification_loss(logits, torch.cat([labels, negatives]))
            terms = {"bce": bce}
        else:
            x_adv = adversarial_climb(model, x_ood, config.adv_eps)  # x' = x + eps * g / max|g|
            logits, z = ddp_model(torch.cat([images, x_adv]), with_features=True)
            logits_id, logits_adv = logits[:n_id], logits[n_id:]
            bce = classification_loss(logits_id, labels)
            l_dist, stats = distance_loss(z[:n_id], labels, wood.targets, config.quantile)
            l_ood = ood_loss(logits_adv, n_id, keep_mask(logits_adv, wood.ignore))
            loss = bce + config.wood_lambda * l_dist + config.wood_beta * l_ood
            terms = {"bce": bce, "l_dist": l_dist, "l_ood": l_ood, **stats}
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # after backward, so every DDP rank sees the same all-reduced gradient and stops together
    _stop_if_diverged(step, config, {"loss": loss, **terms}, _gradient_norm(model))
    optimizer.step()
    return {"loss": loss, **terms}


def _gradient_norm(model) -> torch.Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _stop_if_diverged(step: int, config: TrainConfig, terms: dict, gradient: torch.Tensor):
    names = [k for k in LOSS_TERMS if k in terms]
    gradient = gradient.float().to(terms["loss"].device)
    values = torch.stack([*(terms[k].detach().float() for k in names), gradient])
    finite = torch.isfinite(values)
    if bool(finite.all()):  # one device sync per step
        return
    bad = [LOSS_TERMS[k] for k, ok in zip(names, finite.tolist()) if not ok] or ["the gradient"]
    raise DivergedError(
        f"training diverged at step {step}: {bad[0]} is NaN or inf; {_causes(config)}"
    )


def _causes(config: TrainConfig) -> str:
    weights = (
        "" if config.backbone_weights or config.init_checkpoint
        else ", or a backbone from random weights (pass --backbone-weights, an ImageNet checkpoint)"
    )  # fmt: skip
    return (
        f"usual causes: a learning rate too high (--lr {config.lr}; try 10x lower){weights}. "
        "Nothing from this step on was saved or selected; re-run with the fix and a new --out-dir"
    )


def build_model(config: TrainConfig, num_classes: int) -> tuple[torch.nn.Module, str]:
    """The model to start from, and the init checkpoint's weights hash ("" when built fresh)."""
    if not config.init_checkpoint:
        model = build_cam_net(
            config.backbone, num_classes, config.output_stride, config.frozen_bn,
            config.backbone_weights,
        )  # fmt: skip
        return model, ""
    model, meta = load_cam_net(config.init_checkpoint, frozen_bn=config.frozen_bn)
    if model.num_classes != num_classes:
        raise DataError(
            f"{config.init_checkpoint}: has {model.num_classes} classes, data has {num_classes}"
        )
    return model, meta["weights_sha256"]


# Settings that do not change the trained weights; a run moved to another folder is still reused.
_NOT_IN_RUN_KEY = ("out_dir", "num_workers", "device", "log_every", "checkpoint_every")


def _run_key(config: TrainConfig, inputs: dict[str, str]) -> str:
    defaults = {k: TrainConfig.__dataclass_fields__[k].default for k in _NOT_IN_RUN_KEY}
    blob = json.dumps([cfg.config_hash(cfg.replace(config, **defaults)), inputs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(config: TrainConfig, log: Callable[[str], None] = _say) -> TrainResult:
    """Train per ``config``; returns the selected checkpoint. Safe to re-run: it resumes or reuses.

    ``log`` receives one line when a run resumes (rank 0 only).
    """
    _check_config(config)
    # the mask folder actually read goes into the run key and config.yaml, never "auto"
    config = cfg.replace(config, masks=voc.resolve_masks(config.voc_root, config.masks))
    rank, world_size = distributed.setup()
    log = log if rank == 0 else (lambda _: None)
    device = resolve_device(config.device)
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", distributed.local_rank())
    out = Path(config.out_dir)
    final_path, last_path = out / "model.pt", out / "last.pt"

    torch.manual_seed(config.seed)
    transform = TrainTransform(config.resize_long, config.crop, config.hflip)
    dataset, ids, class_names = voc_classification_dataset(
        config.voc_root, config.train_split, transform, config.seed, config.masks
    )
    ood = _load_ood_set(config, class_names, dataset.paths) if config.uses_ood else None
    model, init_sha = build_model(config, len(class_names))
    inputs = {"id_set_sha256": _id_set_sha256(ids, dataset.labels.numpy(), class_names),
              "init_checkpoint_sha256": init_sha, "ood_set_sha256": ood.content_sha256 if ood else ""}  # fmt: skip
    run_key = _run_key(config, inputs)
    ood_record = ood.record() if ood else None
    if final_path.is_file() and read_checkpoint(final_path).get("run_key") == run_key:
        meta = read_checkpoint(final_path)
        return TrainResult(final_path, meta["weights_sha256"], meta["selected_epoch"],
                           meta.get("val_metrics", {}), 0.0, "reused", ood_set=ood_record)  # fmt: skip

    model = model.to(device)
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
    steps_per_epoch = (
        len(epoch_order(len(dataset), config.seed, 0, rank, world_size)) // config.batch_size
    )
    if steps_per_epoch == 0:
        raise DataError(
            f"{config.train_split}: {len(dataset)} images are fewer than one batch of "
            f"{config.batch_size} (--batch-size)"
        )
    max_step = steps_per_epoch * config.epochs
    step, best = 0, {"score": -math.inf, "epoch": 0, "metrics": {}}
    resume = read_checkpoint(last_path) if last_path.is_file() else None
    if resume is not None:
        if resume.get("run_key") != run_key:
            changed = _what_changed(resume, config, inputs)
            raise OutputExistsError(
                f"{last_path}: belongs to a run with another config or other inputs ({changed}); "
                "use a new --out-dir or delete it"
            )
        model.load_state_dict(resume["state_dict"])
        optimizer.load_state_dict(resume["optimizer"])
        step, best = resume["step"], resume["best"]
        log(f"train: resumed from {last_path} at step {step} of {max_step}")
    if bad := nonfinite_weights(model):
        raise DivergedError(f"the starting weights hold NaN or inf ({', '.join(bad[:3])})")
    wood = None
    if ood is not None:
        from wood_train.wood.objective import prepare_wood  # W-OoD only: faiss

        # on resume: the saved prototypes, centres and OoD stream position, not recomputed ones
        wood = prepare_wood(
            config, model, class_names, ood, device, resume.get("wood") if resume else None
        )
    ddp_model = distributed.wrap(model, device)
    start_epoch = step // steps_per_epoch  # epochs already done
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_config(config, out / "config.yaml", class_names=class_names, inputs=inputs,
                        ood_set=ood_record)  # fmt: skip
    log_file = RunLog(out / "train_log.csv", rank == 0, resume_step=step, resume_epoch=start_epoch)
    started = time.time()

    def checkpoint(path: Path, epoch: int, resumable: bool = False, **extra) -> str:
        """Save; only ``last.pt`` keeps the optimizer. Never saves NaN or inf weights."""
        if bad := nonfinite_weights(model):
            raise DivergedError(f"after step {step} the weights {bad[:3]} hold NaN or inf; "
                                f"{_causes(config)}")  # fmt: skip
        resume_state = {"optimizer": optimizer.state_dict(), "best": best} if resumable else {}
        return save_checkpoint(
            path, model, class_names, cfg.to_dict(config), run_key=run_key, step=step, epoch=epoch,
            inputs=inputs, ood_set=ood_record, wood=wood.state() if wood else None, **resume_state, **extra,
        )  # fmt: skip

    for epoch in range(start_epoch + 1, config.epochs + 1):
        dataset.set_epoch(epoch - 1)  # 0-based for the augmentation and order seeds
        order = epoch_order(len(dataset), config.seed, epoch - 1, rank, world_size)
        skip = step - (epoch - 1) * steps_per_epoch
        loader = fixed_order_loader(
            dataset, order, config.batch_size, skip, config.num_workers, pin_memory(device)
        )
        model.train()
        bar = progress(loader, total=steps_per_epoch, initial=skip,
                       desc=f"epoch {epoch}/{config.epochs}", unit="step")  # fmt: skip
        tick = time.time()
        for images, labels, _ in bar:
            for group in optimizer.param_groups:
                group["lr"] = (
                    poly_lr(config.lr, step, max_step, config.poly_power) * group["lr_mult"]
                )
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            x_ood = wood.next_batch(device) if wood is not None else None
            terms = train_step(
                model, ddp_model, optimizer, images, labels, x_ood, wood, config, step + 1
            )
            step += 1
            if step % config.log_every == 0 or step == max_step:
                rate = (
                    config.log_every * images.shape[0] * world_size / max(time.time() - tick, 1e-9)
                )
                log_file.write({"step": step, "epoch": epoch, **{k: float(v.detach()) for k, v in terms.items()},
                                "lr": optimizer.param_groups[0]["lr"], "images_per_s": rate})  # fmt: skip
                bar.set_postfix(loss=f"{float(terms['loss'].detach()):.4f}", img_s=f"{rate:.0f}")
                tick = time.time()
            if rank == 0 and step % config.checkpoint_every == 0 and step % steps_per_epoch:
                checkpoint(last_path, epoch - 1, resumable=True)
        if wood is not None and config.refresh_every and epoch % config.refresh_every == 0:
            wood.refresh(model)
        metrics = _validate(model, config, class_names, device) if rank == 0 else {}
        score = metrics.get("selection_score", float(epoch))
        if rank == 0:
            log_file.write_epoch({"epoch": epoch, **metrics})
            if score >= best["score"]:
                best = {"score": score, "epoch": epoch, "metrics": metrics}
                checkpoint(out / "best.pt", epoch)
            checkpoint(last_path, epoch, resumable=True)
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
             "epochs": config.epochs, "val_metrics": best["metrics"], "seconds": seconds,
             "class_names": class_names, "inputs": inputs, "ood_set": ood_record}, indent=2))  # fmt: skip
    distributed.barrier()
    distributed.cleanup()
    status = "resumed" if resume is not None else "trained"
    resumed_from = resume["step"] if resume is not None else 0
    return TrainResult(final_path, digest, best["epoch"], best["metrics"], seconds, status,
                       resumed_from, ood_record, model)  # fmt: skip


def _check_config(config: TrainConfig) -> None:
    """What can be refused before any file is read: flags that cannot work together."""
    if config.voc_root is None:
        raise ConfigError("--voc-root is required (the VOC-layout dataset to train on)")
    if config.frozen_bn and not config.backbone_weights and not config.init_checkpoint:
        raise ConfigError(
            f"--frozen-bn keeps BatchNorm statistics fixed, but without --backbone-weights or "
            f"--init-checkpoint they are a random network's: this would train a {config.backbone} "
            "from scratch for hours and learn little. Pass --backbone-weights PATH (a local "
            "ImageNet checkpoint), or --no-frozen-bn to train from scratch on purpose"
        )
    root = voc.check_voc_root(config.voc_root)
    for split, flag in ((config.train_split, "--train-split"), (config.val_split, "--val-split")):
        if split and not voc.split_path(root, split).is_file():
            offered = ", ".join(voc.split_names(root)) or "none"
            extra = " or none" if flag == "--val-split" else ""
            raise ConfigError(
                f"{voc.split_path(root, split)} not found: pass {flag} with one of the splits in "
                f"{root / 'ImageSets' / 'Segmentation'} ({offered}), a .txt list of image ids{extra}"
            )


def _load_ood_set(config: TrainConfig, class_names: list[str], id_paths):
    """Validate the OoD set (every run), refuse training images in it, check --num-centers."""
    from wood_train.manifest.ood_list import load_ood_set  # pandas: W-OoD only

    ood = load_ood_set(config.ood_manifest, config.ood_image_root, class_names, id_paths)
    if not config.ood_as_negatives and len(ood.paths) < config.num_centers:
        raise ConfigError(
            f"{config.ood_manifest}: {len(ood.paths)} OoD images are fewer than --num-centers "
            f"{config.num_centers} (K-means centres); pass --num-centers {len(ood.paths)} or "
            "less, or review more images"
        )
    return ood


_INPUT_NAMES = {
    "id_set_sha256": "the ID training set",
    "init_checkpoint_sha256": "the init checkpoint",
    "ood_set_sha256": "the OoD set",
}


def _what_changed(saved: dict, config: TrainConfig, inputs: dict[str, str]) -> str:
    """The config fields and inputs in which a saved run differs from this one, for the user."""
    now, before = cfg.to_dict(config), saved.get("config") or {}
    fields = [k for k in now if k not in _NOT_IN_RUN_KEY and before.get(k, now[k]) != now[k]]
    saved_inputs = saved.get("inputs") or {}
    names = [_INPUT_NAMES[k] for k in inputs if saved_inputs.get(k, inputs[k]) != inputs[k]]
    return ", ".join(fields + names) or "an earlier hardood version"


def _id_set_sha256(ids: list[str], labels: np.ndarray, class_names: list[str]) -> str:
    """What the ID training set is, for the run key: its image ids, labels and class names."""
    digest = hashlib.sha256(json.dumps([ids, class_names]).encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _validate(model, config: TrainConfig, class_names: list[str], device) -> dict:
    """Held-out metrics per epoch: classification mAP, and CAM mIoU when the split has masks."""
    if not config.val_split:
        return {}
    from wood_train.validation import validate  # imports the CAM/eval stack only when needed

    return validate(model, config, class_names, device)
