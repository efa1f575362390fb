"""The ``hardood`` command: one subcommand per stage, from all three rooms.

``COMMANDS`` lists every subcommand in the order a user runs them, with the room module that
builds its parser. Only the chosen subcommand's room is imported, and a parser imports configs
only (no torch), so ``hardood --help`` and ``hardood <cmd> --help`` answer at once.

Errors: a ``HardoodError`` (a problem with what the user gave: a flag, a file, a dataset, a
store) prints as one line, ``hardood <cmd>: error: ...``, and exits 2. Any other exception is a
bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from wood_train.errors import HardoodError

# name: (module with add_<name>/run_<name>, one line for `hardood --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "world": ("wood_train.cli", "generate the spurious-cue world (VOC layout, pool, pool truth)"),
    "train": (
        "wood_train.cli",
        "train the CAM classifier (baseline, or W-OoD with --ood-manifest)",
    ),
    "mine": ("curate.cli", "score a candidate pool and build the hard-OoD review queue"),
    "queue": ("curate.cli", "print the review queue (or write it to a CSV)"),
    "similar": ("curate.cli", "list the pool images most similar to an image"),
    "annotate": ("app.cli", "serve the review app: label the queue as a team"),
    "export": ("curate.cli", "write the reviewed images as a hard-OoD manifest"),
    "cam": ("wood_train.cli", "write multi-scale CAMs (.npy, IRN layout) for a split"),
    "evaluate": ("wood_train.cli", "score CAM seeds: mIoU and the spurious-activation rate"),
    "demo": ("app.cli", "run the whole story on the embedded world (what `make demo` runs)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``hardood`` parser; only ``command``'s subparser gets its options (and imports)."""
    parser = argparse.ArgumentParser(
        prog="hardood",
        description="Curate hard out-of-distribution images for weakly supervised semantic "
        "segmentation, and train with them (W-OoD). Stages run in this order: world -> train -> "
        "mine -> annotate -> export -> train --ood-manifest -> cam -> evaluate; `demo` runs them "
        "all. `hardood COMMAND --help` lists a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            getattr(importlib.import_module(module), f"add_{name}")(sub)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse a ``hardood`` command line (``argv`` without the program name)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    return build_parser(command if command in COMMANDS else None).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = args.func(args)
    except HardoodError as exc:
        print(f"hardood {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"hardood {args.command}: interrupted; re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    return int(result or 0)


# ---- the top floor's own commands ------------------------------------------------------------


def add_annotate(parser: argparse.ArgumentParser) -> None:
    from app.annotate.launch import AnnotateConfig
    from wood_train import config as cfg

    parser.description = (
        "Serve the review app for a curation store: annotators sign in and give the image-level "
        "verdict in a grid of thumbnails or one image at a time, with the keyboard."
    )
    cfg.add_config_args(parser, AnnotateConfig)
    parser.set_defaults(func=run_annotate)


def run_annotate(args: argparse.Namespace) -> int:
    from app.annotate.launch import AnnotateConfig, launch
    from wood_train import config as cfg

    return launch(cfg.config_from_args(args, AnnotateConfig))


def add_demo(parser: argparse.ArgumentParser) -> None:
    from app.demo.config import DemoConfig
    from wood_train import config as cfg

    parser.description = (
        "The whole story on the embedded world: world -> baseline -> mine -> simulated review "
        "-> export -> W-OoD -> CAMs -> evaluation -> re-mine -> report. Finished steps are "
        "reused, so a re-run resumes."
    )
    parser.add_argument(
        "--fresh", action="store_true", help="wipe the workspace and the demo manifest first"
    )
    cfg.add_config_args(parser, DemoConfig)
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import shutil

    from app.demo.config import DemoConfig
    from app.demo.run import run_demo as run
    from wood_train import config as cfg

    config = cfg.config_from_args(args, DemoConfig)
    if args.fresh:
        for folder in (Path(config.out), Path(config.manifest_dir)):
            if folder.exists():
                shutil.rmtree(folder)
    path = run(config)
    print(
        f"demo: report at {path}; open the app on this store with: "
        f"hardood annotate --db {Path(config.out) / 'curation.db'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
