"""The hard-OoD manifest: the contract between curation (writes it) and training (reads it).

A manifest (schema version 1, see ``data_manifests/SCHEMA.md``) is a folder with two files::

    manifest.csv        one row per reviewed image, sorted by sha256
    manifest.meta.json  schema_version, image_root, classes, provenance, mining, label_policy

``write_manifest`` writes one atomically; ``validate_manifest`` checks one completely and raises a
single ``ManifestError`` naming every offending row; ``load_ood_list`` is the trainer's entry and
also reads the reference implementation's plain ``ood_list.txt``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from wood_train.progress import progress

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)
CSV_NAME = "manifest.csv"
META_NAME = "manifest.meta.json"
COLUMNS = (
    "path", "sha256", "verdict", "top_class", "top_score",
    "votes_no_foreground", "votes_contains_foreground", "annotators",
)  # fmt: skip
VERDICTS = ("no_foreground", "contains_foreground", "unsure", "bad_image")
TRAINED_VERDICT = "no_foreground"
LABEL_POLICIES = ("majority", "unanimous", "any")
META_KEYS = (
    "schema_version", "image_root", "classes", "created_at", "tool_version",
    "scoring_checkpoint_sha256", "mining", "label_policy",
)  # fmt: skip
ANNOTATOR_SEPARATOR = ";"
DEFAULT_MAX_ERRORS = 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_CHUNK = 1 << 20


class ManifestError(ValueError):
    """A manifest (or OoD list) that cannot be trained on; the message lists every problem."""

    def __init__(
        self,
        source: str | Path,
        problems: list[str],
        max_errors: int = DEFAULT_MAX_ERRORS,
        outcome: str = "nothing was loaded",
    ):
        self.source = str(source)
        self.problems = list(problems)
        shown = self.problems[:max_errors]
        lines = [f"{self.source}: {len(self.problems)} problem(s), {outcome}:"]
        lines += [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest that passed ``validate_manifest``.

    ``rows`` holds the CSV as read (strings; ``top_score`` float, the vote counts int) plus a
    ``line`` column (CSV line number); ``ood_paths`` are the absolute paths of the
    ``no_foreground`` rows in file order (sorted by sha256).
    """

    meta: dict[str, Any]
    rows: pd.DataFrame
    image_root: Path
    ood_paths: list[Path]


def verdict_from_votes(
    votes_no_foreground: int, votes_contains_foreground: int, policy: str
) -> str:
    """The verdict a label policy gives a row's votes (``bad_image`` is set by curation, not votes).

    - ``majority``: the side with more votes wins; a tie (including 0-0) is ``unsure``.
    - ``unanimous``: a side wins only if it has at least one vote and the other none.
    - ``any``: one ``contains_foreground`` vote drops the image; else one ``no_foreground`` vote
      keeps it; no votes is ``unsure``.
    """
    no, yes = int(votes_no_foreground), int(votes_contains_foreground)
    if policy == "majority":
        if no == yes:
            return "unsure"
        return "no_foreground" if no > yes else "contains_foreground"
    if policy == "unanimous":
        if no > 0 and yes == 0:
            return "no_foreground"
        if yes > 0 and no == 0:
            return "contains_foreground"
        return "unsure"
    if policy == "any":
        if yes > 0:
            return "contains_foreground"
        return "no_foreground" if no > 0 else "unsure"
    raise ValueError(f"unknown label_policy {policy!r}; choose one of {LABEL_POLICIES}")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the ``sha256`` column)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- checks shared by writing and validating ----------------------------------------------


def _int_or_none(text: Any) -> int | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def _check_meta(meta: dict[str, Any], expected_classes: list[str] | None) -> list[str]:
    problems = []
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        problems.append(f"{META_NAME}: missing key(s) {missing}")
    classes = meta.get("classes")
    if "classes" in meta and (
        not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes)
    ):
        problems.append(f"{META_NAME}: 'classes' must be a list of non-empty class names")
    elif isinstance(classes, list) and len(set(classes)) != len(classes):
        problems.append(f"{META_NAME}: 'classes' repeat a name: {classes}")
    elif expected_classes is not None and classes is not None and classes != list(expected_classes):
        extra = [c for c in classes if c not in expected_classes]
        absent = [c for c in expected_classes if c not in classes]
        detail = (
            f"not in the checkpoint: {extra}; missing: {absent}"
            if extra or absent
            else "same names, different order"
        )
        problems.append(
            f"{META_NAME}: classes differ from the checkpoint's ({detail}); "
            "the manifest was mined for another label set"
        )
    if "label_policy" in meta and meta["label_policy"] not in LABEL_POLICIES:
        problems.append(
            f"{META_NAME}: label_policy {meta['label_policy']!r} is not one of {LABEL_POLICIES}"
        )
    if "mining" in meta and not isinstance(meta["mining"], dict):
        problems.append(f"{META_NAME}: 'mining' must be an object of mining settings")
    if "labelling_cost" in meta and not isinstance(meta["labelling_cost"], dict):
        problems.append(f"{META_NAME}: 'labelling_cost' must be an object")
    if "image_root" in meta and not (isinstance(meta["image_root"], str) and meta["image_root"]):
        problems.append(f"{META_NAME}: 'image_root' must be a non-empty path string")
    return problems


def _check_rows(
    rows: pd.DataFrame, lines: list[int], meta: dict[str, Any], unit: str = "line"
) -> list[str]:
    """Row-level problems, each naming the row (CSV ``line`` or DataFrame ``row``) and path."""
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        return [f"{CSV_NAME}: missing column(s) {missing} (required: {list(COLUMNS)})"]
    classes = meta.get("classes") if isinstance(meta.get("classes"), list) else None
    policy = meta.get("label_policy") if meta.get("label_policy") in LABEL_POLICIES else None
    problems = []
    first_line_of: dict[tuple[str, str], int] = {}
    for line, row in zip(lines, rows.to_dict("records")):
        path, where = str(row["path"]), f"{unit} {line} ({row['path'] or '<empty path>'})"
        row_problems = []
        if not path:
            row_problems.append("empty path")
        elif Path(path).is_absolute() or ".." in Path(path).parts:
            row_problems.append("path must be relative to image_root, without '..'")
        if not _SHA256.match(str(row["sha256"])):
            row_problems.append(f"sha256 {row['sha256']!r} is not 64 lowercase hex digits")
        verdict = row["verdict"]
        if verdict not in VERDICTS:
            row_problems.append(f"verdict {verdict!r} is not one of {VERDICTS}")
        if classes is not None and row["top_class"] not in classes:
            row_problems.append(
                f"top_class {row['top_class']!r} is not one of the manifest's classes"
            )
        try:
            score = float(row["top_score"])
        except (TypeError, ValueError):
            score = math.nan
        if not 0.0 <= score <= 1.0:
            row_problems.append(f"top_score {row['top_score']!r} is not a probability in [0, 1]")
        votes = [_int_or_none(row[c]) for c in ("votes_no_foreground", "votes_contains_foreground")]
        if None in votes:
            row_problems.append(
                f"votes {row['votes_no_foreground']!r}/{row['votes_contains_foreground']!r} "
                "are not non-negative integers"
            )
        elif policy is not None and verdict in VERDICTS and verdict != "bad_image":
            expected = verdict_from_votes(votes[0], votes[1], policy)
            if verdict != expected:
                row_problems.append(
                    f"verdict {verdict!r} disagrees with its votes ({votes[0]} no_foreground, "
                    f"{votes[1]} contains_foreground) under label_policy {policy!r}, "
                    f"which gives {expected!r}"
                )
        for key in ("sha256", "path"):
            value = str(row[key])
            if not value:
                continue
            earlier = first_line_of.setdefault((key, value), line)
            if earlier != line:
                row_problems.append(f"duplicate {key} (same as {unit} {earlier})")
        problems += [f"{where}: {p}" for p in row_problems]
    return problems


def _normalise_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Every cell as the exact text the CSV will hold (so a rebuild is byte-identical)."""
    rows = rows.astype(object).where(rows.notna(), "")
    if "annotators" in rows.columns:
        rows["annotators"] = [
            ANNOTATOR_SEPARATOR.join(a)
            if isinstance(a, (list, tuple))
            else ("" if a is None else a)
            for a in rows["annotators"]
        ]
    for column in ("votes_no_foreground", "votes_contains_foreground"):
        if column in rows.columns:
            rows[column] = [int(v) if _int_or_none(v) is not None else v for v in rows[column]]
    if "top_score" in rows.columns:
        rows["top_score"] = [repr(float(v)) if _is_number(v) else v for v in rows["top_score"]]
    return rows.astype(str)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


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
    table = _normalise_rows(rows)
    extra = [c for c in table.columns if c not in COLUMNS]
    table = table[[c for c in COLUMNS if c in table.columns] + extra]
    # problems name the caller's rows by position (0-based), before sorting
    problems = _check_meta(meta, None) + _check_rows(table, list(range(len(table))), meta, "row")
    if problems:
        raise ManifestError(out_dir, problems, outcome="nothing was written")
    table = table.sort_values(["sha256", "path"], kind="mergesort").reset_index(drop=True)

    if out_dir.exists():
        contents = {p.name for p in out_dir.iterdir()}
        foreign = sorted(contents - {CSV_NAME, META_NAME})
        if foreign:
            raise FileExistsError(
                f"{out_dir} holds files that are not a manifest ({foreign[:5]}); "
                "choose an empty or new folder"
            )
        if contents and not force:
            raise FileExistsError(
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
        if out_dir.exists():  # swap folders; put the old one back if the second rename fails
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            try:
                tmp.rename(out_dir)
            except OSError:
                old.rename(out_dir)
                raise
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


# ---- reading -------------------------------------------------------------------------------


def _manifest_folder(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path
    if path.name in (CSV_NAME, META_NAME):
        return path.parent
    raise FileNotFoundError(
        f"{path}: not a manifest folder (expected a folder with {CSV_NAME} and {META_NAME})"
    )


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[int], list[str]]:
    """Rows as strings, the CSV line each row ends on (header is line 1), and malformed lines."""
    header, records, lines, problems = list(COLUMNS), [], [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None) or header
            for record in reader:
                if record and len(record) != len(header):
                    problems.append(
                        f"line {reader.line_num}: {len(record)} fields, header has {len(header)}"
                    )
                elif record:
                    records.append(record)
                    lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{CSV_NAME} is not a readable UTF-8 CSV ({exc})")
    return pd.DataFrame(records, columns=header, dtype=str), lines, problems


def validate_manifest(
    path: str | Path,
    expected_classes: list[str] | None = None,
    check_files: bool = True,
    check_hashes: bool = True,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> LoadedManifest:
    """Check a manifest completely before anything is trained on it.

    Checks: the schema version is known; meta keys, label policy and class list are present and
    well formed (and equal ``expected_classes``, the checkpoint's, when given); every column is
    present; every row has a relative path, a 64-hex sha256, a known verdict that agrees with its
    votes under the label policy, a top_class among the classes and a top_score in [0, 1]; no two
    rows share a sha256 or a path; with ``check_files`` every image exists under ``image_root``,
    and with ``check_hashes`` its bytes hash to the row's sha256.

    Parameters
    ----------
    path : manifest folder, or its ``manifest.csv`` / ``manifest.meta.json``
    expected_classes : the scoring/training checkpoint's class names
    check_files, check_hashes : look at the image files (hashing reads every byte)
    max_errors : how many problems the error message lists before "... and N more"

    Returns
    -------
    LoadedManifest

    Raises
    ------
    ManifestError
        One error for all problems; each row problem names the CSV line, the path and what is wrong.
    """
    folder = _manifest_folder(path)
    csv_path, meta_path = folder / CSV_NAME, folder / META_NAME
    absent = [p.name for p in (csv_path, meta_path) if not p.is_file()]
    if absent:
        raise ManifestError(folder, [f"missing {name}" for name in absent], max_errors)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(
            folder, [f"{META_NAME} is not valid JSON ({exc})"], max_errors
        ) from None
    if not isinstance(meta, dict):
        raise ManifestError(folder, [f"{META_NAME} must hold a JSON object"], max_errors)
    version = meta.get("schema_version")
    if version not in SUPPORTED_VERSIONS:
        raise ManifestError(
            folder,
            [
                f"unknown schema_version {version!r}; this hardood reads "
                f"{list(SUPPORTED_VERSIONS)} (upgrade hardood or rebuild the manifest)"
            ],
            max_errors,
        )
    rows, lines, problems = _read_csv(csv_path)
    problems = _check_meta(meta, expected_classes) + problems + _check_rows(rows, lines, meta)

    image_root = Path(str(meta.get("image_root", "")))
    if not image_root.is_absolute():
        image_root = (folder / image_root).resolve()
    if check_files and set(COLUMNS) <= set(rows.columns):
        if not image_root.is_dir():
            problems.append(f"{META_NAME}: image_root {image_root} is not a folder")
        else:
            problems += _check_files(rows, lines, image_root, check_hashes)
    if problems:
        raise ManifestError(folder, problems, max_errors)

    rows = rows.assign(
        top_score=rows["top_score"].astype(float),
        votes_no_foreground=rows["votes_no_foreground"].astype(float).astype(int),
        votes_contains_foreground=rows["votes_contains_foreground"].astype(float).astype(int),
        line=lines,
    )
    ood_paths = [image_root / p for p in rows.loc[rows["verdict"] == TRAINED_VERDICT, "path"]]
    return LoadedManifest(meta=meta, rows=rows, image_root=image_root, ood_paths=ood_paths)


def _check_files(
    rows: pd.DataFrame, lines: list[int], image_root: Path, check_hashes: bool
) -> list[str]:
    problems = []
    records = zip(lines, rows["path"], rows["sha256"])
    desc = "hash images" if check_hashes else "find images"
    for line, rel, sha in progress(records, total=len(lines), desc=desc, unit="img"):
        if not rel or Path(rel).is_absolute():
            continue  # already reported
        file = image_root / rel
        if not file.is_file():
            problems.append(f"line {line} ({rel}): file not found under {image_root}")
        elif check_hashes and _SHA256.match(sha) and file_sha256(file) != sha:
            problems.append(
                f"line {line} ({rel}): file bytes do not match sha256 "
                "(the image changed since review)"
            )
    return problems


def read_ood_list_txt(
    list_path: str | Path, image_root: str | Path | None, check_files: bool = True
) -> list[Path]:
    """The reference implementation's ``ood_list.txt``: one image path per line, relative to
    ``image_root`` (its ``--ood_root``). Blank lines are skipped; duplicates and missing files are
    errors naming the line."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"OoD list not found: {list_path}")
    root = Path(image_root) if image_root is not None else None
    problems, paths, first_line_of = [], [], {}
    for number, raw in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = raw.strip()
        if not entry:
            continue
        path = Path(entry)
        if not path.is_absolute():
            if root is None:
                problem = f"line {number} ({entry}): relative path but no image root was given"
                raise ManifestError(list_path, [problem + " (the folder the list is relative to)"])
            path = root / path
        earlier = first_line_of.setdefault(str(path), number)
        if earlier != number:
            problems.append(f"line {number} ({entry}): duplicate of line {earlier}")
        elif check_files and not path.is_file():
            problems.append(f"line {number} ({entry}): file not found")
        paths.append(path)
    if not paths and not problems:
        problems.append("the list holds no paths")
    if problems:
        raise ManifestError(list_path, problems)
    return paths


def load_ood_list(
    manifest_or_list_path: str | Path,
    image_root: str | Path | None = None,
    expected_classes: list[str] | None = None,
    check_files: bool = True,
    check_hashes: bool = True,
) -> list[Path]:
    """The hard-OoD image paths to train on: the trainer's one entry point.

    Parameters
    ----------
    manifest_or_list_path
        A manifest folder, its ``manifest.csv`` or ``manifest.meta.json`` (the ``no_foreground``
        rows are kept, after ``validate_manifest``), or a plain ``.txt`` list as the reference
        implementation uses (one path per line, relative to ``image_root``).
    image_root
        Only for a ``.txt`` list: the folder its paths are relative to. A manifest names its own.
    expected_classes
        The checkpoint's class names; a manifest mined for other classes is refused.
    check_files, check_hashes
        As in ``validate_manifest`` (a ``.txt`` list has no hashes).
    """
    path = Path(manifest_or_list_path)
    if path.suffix == ".txt":
        return read_ood_list_txt(path, image_root, check_files=check_files)
    loaded = validate_manifest(
        path, expected_classes, check_files=check_files, check_hashes=check_hashes
    )
    if not loaded.ood_paths:
        raise ManifestError(path, [f"no row has verdict {TRAINED_VERDICT!r}: nothing to train on"])
    return loaded.ood_paths
