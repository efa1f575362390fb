"""Subcommands of the curation room: mine, queue, similar, export, demo."""

from __future__ import annotations

import argparse

from wood_train.cli import register as _register

STAGES = (
    "curate.mine",
    "curate.queue.build",
    "curate.neighbours.similar",
    "curate.export.build",
    "app.demo.run",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    _register(subparsers, STAGES)
