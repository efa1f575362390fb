"""Checking a manifest completely: every problem of the meta file and of every row, by CSV line."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from wood_train.data.imageio import ImageDecodeError, probe_image
from wood_train.errors import MissingInputError
from wood_train.manifest.contract import (
    ANNOTATOR_PATTERN,
    ANNOTATOR_SEPARATOR,
    COLUMNS,
    CSV_NAME,
    DEFAULT_MAX_ERRORS,
    LABEL_POLICIES,
    MAX_JSON_DEPTH,
    MAX_META_BYTES,
    META_KEYS,
    META_NAME,
    SHA256_PATTERN,
    SUPPORTED_VERSIONS,
    TRAINED_VERDICT,
    VERDICTS,
    LoadedManifest,
    ManifestError,
    file_sha256,
    unescape_cell,
    verdict_from_votes,
)
from wood_train.progress import progress

# ---- checks shared by writing and validating ----------------------------------------------


def _int_or_none(text: Any) -> int | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def check_meta(meta: dict[str, Any], expected_classes: list[str] | None) -> list[str]:
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


def check_rows(
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
        if not SHA256_PATTERN.match(str(row["sha256"])):
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
            expected = verdict_from_votes(
                votes[0], votes[1], policy, _int_or_none(row.get("votes_unsure")) or 0,
                row.get("adjudicated_verdict") or None,
            )  # fmt: skip
            if verdict != expected:
                row_problems.append(
                    f"verdict {verdict!r} disagrees with its votes ({votes[0]} no_foreground, "
                    f"{votes[1]} contains_foreground) under label_policy {policy!r}, "
                    f"which gives {expected!r}"
                )
        bad_ids = [
            a for a in str(row["annotators"]).split(ANNOTATOR_SEPARATOR)
            if a and not ANNOTATOR_PATTERN.fullmatch(a)
        ]  # fmt: skip
        if bad_ids:
            row_problems.append(
                f"annotators {row['annotators']!r}: {bad_ids[0]!r} is not a reviewer id (1-64 "
                "letters, digits, spaces or . _ @ -, starting with a letter or digit)"
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


def normalise_rows(rows: pd.DataFrame) -> pd.DataFrame:
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


# ---- reading -------------------------------------------------------------------------------


def _manifest_folder(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path
    if path.name in (CSV_NAME, META_NAME):
        return path.parent
    raise MissingInputError(
        f"{path}: not a manifest folder (expected a folder with {CSV_NAME} and {META_NAME})"
    )


def _read_meta(meta_path: Path) -> tuple[Any, bytes, list[str]]:
    """The meta JSON, bounded: a file over ``MAX_META_BYTES`` or nested deeper than
    ``MAX_JSON_DEPTH`` is refused before ``json`` parses it (deep nesting is a RecursionError)."""
    size = meta_path.stat().st_size
    if size > MAX_META_BYTES:
        return None, b"", [f"{META_NAME} is {size} bytes; a manifest's meta holds at most {MAX_META_BYTES}"]  # fmt: skip
    data = meta_path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, data, [f"{META_NAME} is not UTF-8 (byte {exc.start})"]
    if _json_depth(text) > MAX_JSON_DEPTH:
        return (
            None,
            data,
            [
                f"{META_NAME} nests objects or lists more than {MAX_JSON_DEPTH} deep; "
                "a manifest's meta is a flat record of settings"
            ],
        )
    try:
        return json.loads(text), data, []
    except json.JSONDecodeError as exc:
        return None, data, [f"{META_NAME} is not valid JSON ({exc})"]


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def _json_depth(text: str) -> int:
    """The deepest nesting of [ and { in a JSON text (strings skipped), without recursion."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
    return deepest


def _read_csv(path: Path) -> tuple[pd.DataFrame | None, list[int], list[str], bytes]:
    """Rows as strings, the CSV line each row ends on (header is line 1), problems, raw bytes.

    The rows are None when the file cannot be read as a table at all (empty, not UTF-8, a
    repeated column name): one problem then says why, instead of one per row. Cells are read
    back from their spreadsheet-safe form (``unescape_cell``); a UTF-8 byte-order mark is skipped.
    """
    data = path.read_bytes()
    if not data.strip():
        return None, [], [f"{CSV_NAME} is empty ({len(data)} bytes): no header and no rows"], data
    body = data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        column = exc.start - (body.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = body[exc.start : exc.start + 1].hex()
        return None, [], [
            f"line {line}: byte 0x{byte} at column {column} is not UTF-8; "
            f"save {CSV_NAME} as UTF-8"
        ], data  # fmt: skip
    reader = csv.reader(io.StringIO(text, newline=""))
    records, lines, problems = [], [], []
    try:
        header = [unescape_cell(c) for c in next(reader, [])]
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            return None, [], [f"line 1: the header names column(s) {repeated} more than once"], data
        for record in reader:
            if record and len(record) != len(header):
                problems.append(
                    f"line {reader.line_num}: {len(record)} fields, header has {len(header)}"
                )
            elif record:
                records.append([unescape_cell(c) for c in record])
                lines.append(reader.line_num)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: not a readable CSV line ({exc})")
    if not records and not problems:
        problems.append(f"{CSV_NAME} has a header but no rows: nothing was reviewed")
    return pd.DataFrame(records, columns=header, dtype=str), lines, problems, data


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
    meta, meta_bytes, problems = _read_meta(meta_path)
    if problems:
        raise ManifestError(folder, problems, max_errors)
    if not isinstance(meta, dict):
        raise ManifestError(folder, [f"{META_NAME} must hold a JSON object"], max_errors)
    version = meta.get("schema_version")
    # type() rather than isinstance: JSON true is a Python bool, and True == 1
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ManifestError(
            folder,
            [
                f"unknown schema_version {version!r}; this hardood reads the integer(s) "
                f"{list(SUPPORTED_VERSIONS)} (upgrade hardood or rebuild the manifest)"
            ],
            max_errors,
        )
    rows, lines, csv_problems, csv_bytes = _read_csv(csv_path)
    problems = check_meta(meta, expected_classes) + csv_problems
    if rows is None:
        raise ManifestError(folder, problems, max_errors)
    problems += check_rows(rows, lines, meta)

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

    digest = hashlib.sha256()
    for blob in (csv_bytes, meta_bytes):
        digest.update(hashlib.sha256(blob).digest())
    rows = rows.assign(
        top_score=rows["top_score"].astype(float),
        votes_no_foreground=rows["votes_no_foreground"].astype(float).astype(int),
        votes_contains_foreground=rows["votes_contains_foreground"].astype(float).astype(int),
        line=lines,
    )
    ood_paths = [image_root / p for p in rows.loc[rows["verdict"] == TRAINED_VERDICT, "path"]]
    return LoadedManifest(meta, rows, image_root, ood_paths, digest.hexdigest())


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
            continue
        if check_hashes and SHA256_PATTERN.match(sha) and file_sha256(file) != sha:
            problems.append(
                f"line {line} ({rel}): file bytes do not match sha256 "
                "(the image changed since review)"
            )
        problem = image_header_problem(file)
        if problem:
            problems.append(f"line {line} ({rel}): {problem}")
    return problems


def image_header_problem(path: Path) -> str | None:
    """Why ``path`` is not an image, from its header alone (None when it looks like one)."""
    try:
        probe_image(path)
    except ImageDecodeError as exc:
        detail = f": {exc.detail}" if exc.detail else ""
        return f"not a usable image ({exc.reason}{detail})"
    return None
