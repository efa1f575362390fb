"""Subcommands of the curation room: mine, queue, similar, export, demo."""

from __future__ import annotations

import argparse

from wood_train.cli import register as _register

STAGES = ("curate.mine", "curate.queue", "curate.similar", "curate.export", "curate.demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    _register(subparsers, STAGES)
