"""Subcommands of the trainer room: world, train, cam, evaluate."""

from __future__ import annotations

import argparse
import importlib

STAGES = (
    "wood_train.world.generate",
    "wood_train.train",
    "wood_train.cam.make",
    "wood_train.cam.evaluate",
)


def register(subparsers: argparse._SubParsersAction, stages: tuple[str, ...] = STAGES) -> None:
    """Each stage module adds its own parser through ``add_cli(subparsers)``."""
    for name in stages:
        importlib.import_module(name).add_cli(subparsers)
