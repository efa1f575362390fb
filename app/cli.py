"""The ``hardood`` command: one subcommand per stage, from all three rooms."""

from __future__ import annotations

import argparse
import sys

from wood_train.data.imageio import ImageDecodeError


def build_parser() -> argparse.ArgumentParser:
    from app.annotate import launch as annotate
    from curate import cli as curate_cli
    from wood_train import cli as wood_cli

    parser = argparse.ArgumentParser(
        prog="hardood",
        description="Curate hard out-of-distribution images for weakly supervised semantic "
        "segmentation, and train with them (W-OoD). Stages run in this order: world -> train -> "
        "mine -> annotate -> export -> train --ood-manifest -> cam -> evaluate; `demo` runs them all.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    wood_cli.register(subparsers)
    curate_cli.register(subparsers)
    annotate.add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (FileNotFoundError, ValueError, ImageDecodeError, KeyError) as exc:
        # user-facing problems (bad path, bad manifest row, bad config): one clear line, no traceback
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hardood {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"hardood {args.command}: interrupted; re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
