"""Writing a manifest atomically, after the same checks the validator runs."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from wood_train.errors import OutputExistsError
from wood_train.manifest.contract import COLUMNS, CSV_NAME, META_NAME, SCHEMA_VERSION, ManifestError
from wood_train.manifest.validate import check_meta, check_rows, normalise_rows

# ---- writing -------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars in mining settings
        return value.item()
    raise TypeError(f"{META_NAME}: cannot store {type(value).__name__} value {value!r} in JSON")


def _tool_version() -> str:
    try:
        return metadata.version("hardood")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_manifest(
    out_dir: str | Path, rows: pd.DataFrame, meta: dict[str, Any], force: bool = False
) -> Path:
    """Write a manifest folder atomically; returns the folder.

    Rows are sorted by ``sha256`` (then ``path``) and written with fixed formatting, so rebuilding
    from the same reviews gives a byte-identical ``manifest.csv``. ``schema_version``,
    ``created_at`` (UTC, ISO 8601) and ``tool_version`` are filled in when ``meta`` lacks them.
    Both files are written into a temporary sibling folder that is then renamed into place, so a
    reader never sees half a manifest. Rows and meta are checked first (as ``validate_manifest``
    does, without touching the images); nothing is written if any check fails.

    Parameters
    ----------
    out_dir : path of the manifest folder
    rows : DataFrame with at least the columns ``COLUMNS``; ``annotators`` may hold lists
    meta : dict with the keys ``META_KEYS`` (see ``data_manifests/SCHEMA.md``)
    force : replace an existing manifest folder (only one that holds nothing but a manifest)

    Raises
    ------
    FileExistsError : ``out_dir`` holds a manifest and ``force`` is False, or holds other files
    ManifestError : a row or the meta breaks the schema
    """
    out_dir = Path(out_dir)
    meta = dict(meta)
    if isinstance(meta.get("image_root"), Path):
        meta["image_root"] = str(meta["image_root"])
    meta.setdefault("schema_version", SCHEMA_VERSION)
    meta.setdefault("created_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("tool_version", _tool_version())
    if meta["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(
            out_dir,
            [f"this writer writes schema_version {SCHEMA_VERSION}, got {meta['schema_version']!r}"],
            outcome="nothing was written",
        )
    table = normalise_rows(rows)
    extra = [c for c in table.columns if c not in COLUMNS]
    table = table[[c for c in COLUMNS if c in table.columns] + extra]
    # problems name the caller's rows by position (0-based), before sorting
    problems = check_meta(meta, None) + check_rows(table, list(range(len(table))), meta, "row")
    if problems:
        raise ManifestError(out_dir, problems, outcome="nothing was written")
    table = table.sort_values(["sha256", "path"], kind="mergesort").reset_index(drop=True)

    if out_dir.exists():
        contents = {p.name for p in out_dir.iterdir()}
        foreign = sorted(contents - {CSV_NAME, META_NAME})
        if foreign:
            raise OutputExistsError(
                f"{out_dir} holds files that are not a manifest ({foreign[:5]}); "
                "choose an empty or new folder"
            )
        if contents and not force:
            raise OutputExistsError(
                f"{out_dir} already holds a manifest; pass force=True (--force) to replace it"
            )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with open(tmp / CSV_NAME, "w", newline="", encoding="utf-8") as f:
            table.to_csv(f, index=False, lineterminator="\n")
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / META_NAME, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, sort_keys=True, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        if swap_in_folder(tmp, out_dir, old):
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def swap_in_folder(built: Path, out_dir: Path, old: Path) -> bool:
    """Rename ``built`` to ``out_dir``. An existing ``out_dir`` is first moved to ``old`` and put
    back if the second rename fails, so a reader sees the old folder or the new one, never
    neither. Returns True when an old folder was moved aside (the caller deletes ``old``)."""
    if not out_dir.exists():
        built.rename(out_dir)
        return False
    out_dir.rename(old)
    try:
        built.rename(out_dir)
    except OSError:
        old.rename(out_dir)
        raise
    return True
