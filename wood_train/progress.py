"""Progress bars for long loops: rate and ETA on a terminal, quiet in tests and CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """Bars show unless HARDOOD_QUIET=1 or CI is set (tests set HARDOOD_QUIET)."""
    if os.environ.get("HARDOOD_QUIET") == "1" or os.environ.get("CI"):
        return False
    return True


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """``tqdm`` with the project's defaults (stderr, smoothing, disabled when quiet)."""
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("smoothing", 0.1)
    return tqdm(iterable, **kwargs)
