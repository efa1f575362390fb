"""Run by torchrun in test_train: train on the tiny world, save this rank's final weights."""

import sys
from pathlib import Path

import torch

from wood_train import config as cfg
from wood_train.train import train
from wood_train.train_config import PRESETS

voc_root, out, weights = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
config = cfg.replace(
    PRESETS["world"], voc_root=voc_root, out_dir=out / "run", epochs=1, batch_size=4,
    resize_long=(28, 40), crop=32, num_workers=0, val_split=None, lr=0.01, frozen_bn=True,
    backbone_weights=weights,
)  # fmt: skip
result = train(config)
rank = int(__import__("os").environ["RANK"])
torch.save(
    {k: v.detach().clone() for k, v in result.model.state_dict().items()}, out / f"rank{rank}.pt"
)
