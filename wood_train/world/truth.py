"""The pool's ground truth: evaluation and the simulated annotators read it; mining never does."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from wood_train.errors import DataError, MissingInputError
from wood_train.world.config import TRUTH_COLUMNS, world_paths


def read_pool_truth(world_root: str | Path) -> pd.DataFrame:
    """The pool's ground truth (one row per pool file). Evaluation only: mining never reads it."""
    path = world_paths(world_root).truth_csv
    if not path.is_file():
        raise MissingInputError(f"{path}: pool truth not found; is {world_root} a world folder?")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in TRUTH_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    return table
