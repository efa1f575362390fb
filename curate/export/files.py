"""Writing an export folder: ``manifest.csv``, ``manifest.meta.json`` and ``ood_list.txt``.

- **Atomic.** Everything is written into a temporary sibling folder and renamed into place; an
  existing export is replaced only with ``force``, and a folder holding anything else never.
- **Readable by the team.** The folder gets the usual permissions (``0777`` less the umask, like
  ``mkdir``), not the ``0700`` of a temporary folder.
- **Safe in a spreadsheet.** In ``manifest.csv`` every text cell that starts with a formula
  character (``= + - @``, tab, carriage return, after any ``'``) is written with one more leading
  ``'`` (OWASP's rule, ``wood_train.manifest.contract.escape_cell``); the validator removes exactly
  that one ``'`` (``unescape_cell``), so every value reads back exactly.
- **``ood_list.txt`` stays a plain list** the reference code reads (one path per line, relative to
  its ``--ood_root``), so it cannot carry that escape. A path that starts with a formula character
  is written as ``./PATH``: the same file for any reader that joins it to the root, and text in a
  spreadsheet. A path that a line list cannot hold (a line break inside it, or white space at its
  end, which readers strip) is left out of ``ood_list.txt``; it stays in ``manifest.csv``. Both
  are said on the command line and recorded in the meta (``ood_list``).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from wood_train.errors import ConfigError, OutputExistsError
from wood_train.manifest.contract import (
    COLUMNS,
    CSV_NAME,
    FORMULA_PREFIXES,
    META_NAME,
    TRAINED_VERDICT,
    escape_cell,
)
from wood_train.manifest.validate import normalise_rows
from wood_train.manifest.write import swap_in_folder, write_manifest

OOD_LIST_NAME = "ood_list.txt"
EXPORT_FILES = (CSV_NAME, META_NAME, OOD_LIST_NAME)
# manifest.csv columns that hold numbers; every other column is text and is escaped
NUMERIC_COLUMNS = (
    "top_score", "votes_no_foreground", "votes_contains_foreground", "votes_unsure",
    "votes_bad_image", "hardness_score", "queue_rank", "queue_run_id",
)  # fmt: skip


def ood_list_lines(rows: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """The ``ood_list.txt`` lines of the ``no_foreground`` rows (in queue order), the paths
    written as ``./PATH`` and the paths left out (see the module docstring)."""
    trained = rows.loc[rows["verdict"] == TRAINED_VERDICT].sort_values(
        ["queue_run_id", "queue_rank"]
    )
    lines, renamed, left_out = [], [], []
    for path in trained["path"]:
        if len(f"x{path}x".splitlines()) != 1 or path != path.rstrip():
            left_out.append(path)
        elif path.startswith(FORMULA_PREFIXES):
            renamed.append(path)
            lines.append(f"./{path}")
        else:
            lines.append(path)
    return lines, renamed, left_out


def refuse_to_clobber(out_dir: Path, force: bool) -> None:
    """Raise unless ``out_dir`` can be written: new, or an export that ``force`` may replace."""
    for folder in out_dir.parents:  # the nearest existing ancestor must be a folder
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(
                    f"--out {out_dir}: {folder} is a file, not a folder, so the export cannot be "
                    "written under it; choose an --out outside it"
                )
            break
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir} exists and is not a folder; choose another --out")
    contents = {p.name for p in out_dir.iterdir()}
    foreign = sorted(contents - set(EXPORT_FILES))
    if foreign:
        raise OutputExistsError(
            f"{out_dir} holds files that are not an export ({foreign[:5]}); choose a new folder"
        )
    if contents and not force:
        raise OutputExistsError(f"{out_dir} already holds an export; pass --force to replace it")


def write_export(
    out_dir: str | Path, rows: pd.DataFrame, meta: dict, lines: list[str], force: bool = False
) -> Path:
    """Write the manifest (spreadsheet-safe) and ``ood_list.txt`` (``lines``) into a temporary
    sibling folder, then rename it into place with the usual permissions."""
    out_dir = Path(out_dir)
    refuse_to_clobber(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        built = write_manifest(staging / out_dir.name, rows, meta)
        _write_safe_csv(built / CSV_NAME, rows)
        _write_text_synced(built / OOD_LIST_NAME, "".join(f"{line}\n" for line in lines))
        os.chmod(built, _folder_mode(staging))
        swap_in_folder(built, out_dir, staging / "previous")  # staging's cleanup removes it
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _folder_mode(parent: Path) -> int:
    """The mode ``mkdir`` gives a new folder here (0777 less the umask), read from a probe
    folder: ``os.umask`` cannot be read without setting it, which races with other threads."""
    probe = parent / ".mode-probe"
    probe.mkdir()
    try:
        return probe.stat().st_mode & 0o7777
    finally:
        probe.rmdir()


def _write_safe_csv(csv_path: Path, rows: pd.DataFrame) -> None:
    """Rewrite ``manifest.csv`` from ``rows`` in the manifest's own order and text form, with
    every text cell in its spreadsheet-safe form. A row with a carriage return in a cell is
    written fully quoted: Python's csv writer quotes only the line terminator ``\n``, and a bare
    ``\r`` would split the row for every reader."""
    table = normalise_rows(rows)
    table = table[[c for c in COLUMNS if c in table.columns] + [
        c for c in table.columns if c not in COLUMNS
    ]]  # fmt: skip
    table = table.sort_values(["sha256", "path"], kind="mergesort")  # as write_manifest sorts
    text = [name not in NUMERIC_COLUMNS for name in table.columns]
    buffer = io.StringIO()
    minimal = csv.writer(buffer, lineterminator="\n")
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    minimal.writerow(table.columns)
    for record in table.itertuples(index=False):
        cells = [escape_cell(v) if is_text else v for v, is_text in zip(record, text)]
        (quoted if any("\r" in c for c in cells) else minimal).writerow(cells)
    _write_text_synced(csv_path, buffer.getvalue())


def _write_text_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
