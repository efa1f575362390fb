"""The training config (baseline and W-OoD) and its named presets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wood_train.config import config_field


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Presets: ``voc12`` (the reference), ``world`` (CPU)."""

    # data
    voc_root: Path | None = config_field(
        None, "VOC-layout dataset root (JPEGImages, SegmentationClass, ImageSets)"
    )
    train_split: str = config_field("train_aug", "split list the classifier trains on")
    val_split: str | None = config_field(
        "val", "held-out split with masks for model selection; none = last epoch"
    )
    masks: str = config_field(
        "auto",
        "auto (the only mask folder present) | SegmentationClassAug | SegmentationClass; name one when both exist",
    )
    out_dir: Path = config_field(
        Path("runs/train"), "folder for checkpoints, logs and the resolved config"
    )
    # model (WOOD_SPEC section 1)
    backbone: str = config_field("resnet50", "resnet18 | resnet34 | resnet50")
    output_stride: int = config_field(16, "8, 16 or 32; 16 is the VOC reference")
    frozen_bn: bool = config_field(True, "freeze BatchNorm statistics and affine parameters")
    freeze_stem: bool = config_field(True, "do not train conv1/bn1")
    backbone_weights: Path | None = config_field(
        None, "local ImageNet checkpoint for the backbone; none = from scratch"
    )
    init_checkpoint: Path | None = config_field(
        None, "start from this hardood checkpoint (W-OoD starts from the baseline)"
    )
    # optimisation
    batch_size: int = config_field(
        16, "in-distribution images per step (per process under torchrun)"
    )
    epochs: int = config_field(5, "passes over the training split")
    lr: float = config_field(0.1, "base learning rate of the backbone stages that train")
    classifier_lr_mult: float = config_field(10.0, "learning-rate multiplier of the 1x1 classifier")
    momentum: float = config_field(0.0, "SGD momentum (exact IRN parity: 1e-4 with weight_decay 0)")
    weight_decay: float = config_field(1e-4, "SGD weight decay")
    poly_power: float = config_field(0.9, "lr = base * (1 - step / max_step) ** poly_power")
    # augmentation (IRN)
    resize_long: tuple[int, int] = config_field((320, 640), "random resize range of the long side")
    crop: int = config_field(512, "random crop size (zero padded)")
    hflip: bool = config_field(True, "random horizontal flip")
    # W-OoD (WOOD_SPEC section 3); active when ood_manifest is set
    ood_manifest: Path | None = config_field(
        None, "hard-OoD manifest folder or manifest.csv, or a plain ood_list.txt"
    )
    ood_image_root: Path | None = config_field(
        None, "root for relative paths of a plain ood_list.txt"
    )
    ood_batch_size: int = config_field(16, "OoD images per step")
    wood_lambda: float = config_field(0.007, "weight of L_dist (lambda)")
    wood_beta: float = config_field(0.25, "weight of L_ood (beta)")
    num_centers: int = config_field(50, "K, K-means centres of the OoD features")
    quantile: float = config_field(
        0.2, "q: only (sample, centre) pairs nearer than the q-quantile are pushed"
    )
    adv_eps: float = config_field(
        0.07, "step size of the adversarial climb on OoD inputs (normalised space)"
    )
    distance: str = config_field("euclidean", "euclidean | mahalanobis (shared covariance)")
    refresh_every: int = config_field(
        0, "recompute prototypes and centres every N epochs; 0 = fixed (reference)"
    )
    ignore_classes: tuple[str, ...] = config_field(
        (), "drop OoD samples whose top class is one of these"
    )
    ood_as_negatives: bool = config_field(
        False, "ablation: OoD images as all-zero BCE targets, no L_dist/L_ood"
    )
    # run
    seed: int = config_field(0, "seed for order, augmentation, initialisation and K-means")
    num_workers: int = config_field(2, "DataLoader workers")
    device: str = config_field("auto", "auto | cpu | cuda | cuda:N")
    amp: bool = config_field(True, "bf16 autocast on CUDA")
    log_every: int = config_field(10, "steps between log rows")
    checkpoint_every: int = config_field(
        200, "steps between resumable checkpoints (also at each epoch end)"
    )
    feature_batch_size: int = config_field(
        64, "batch size of the prototype/centre feature extraction"
    )
    feature_size: int = config_field(0, "image side for feature extraction; 0 = the crop size")

    @property
    def uses_ood(self) -> bool:
        return self.ood_manifest is not None


PRESETS: dict[str, TrainConfig] = {
    # WOOD_SPEC section 1 and 3 reference defaults (VOC 2012 train_aug, ResNet-50, one GPU)
    "voc12": TrainConfig(),
    # the spurious-cue world on a CPU: small images, from scratch, trainable BN
    "world": TrainConfig(
        train_split="train",
        val_split="val",
        backbone="resnet18",
        output_stride=8,
        frozen_bn=False,
        freeze_stem=False,
        batch_size=32,
        epochs=6,
        lr=0.01,
        classifier_lr_mult=10.0,
        momentum=0.9,
        weight_decay=1e-4,
        resize_long=(56, 80),
        crop=64,
        ood_batch_size=32,
        num_centers=20,
        num_workers=1,
        log_every=5,
        checkpoint_every=50,
    ),
}
