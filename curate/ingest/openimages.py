"""OpenImages' own files, read as published: image-level labels, class descriptions, hierarchy.

The files (names as published under ``storage.googleapis.com/openimages/``)::

    v7/oidv7-train-annotations-human-imagelabels.csv    ImageID,Source,LabelName,Confidence
        human-verified: Confidence 1 = present, 0 = verified absent
    v7/oidv7-train-annotations-machine-imagelabels.csv  same columns, Source "machine",
        Confidence a fraction in (0, 1]
    v7/oidv7-class-descriptions.csv                     LabelName,DisplayName (with a header)
    v5/class-descriptions-boxable.csv                   /m/0199g,Bicycle (no header)
    2018_04/bbox_labels_600_hierarchy.json              {"LabelName", "Subcategory", "Part"}

Classes are named by machine id (MID: ``/m/07jdr`` is Train). A label says a class is present
when it is human (any ``Source`` but ``machine``) with Confidence above 0, or machine with
Confidence at or above ``min_confidence``, unless a human row exists for the same image and MID
(human beats machine, so a verified "no train here" overrules the machine's 0.9). A Confidence-0
row never makes a class present. The human and machine rows may come in separate files or in one
concatenated file: the ``Source`` column tells them apart.

Label files are streamed in blocks (pyarrow's CSV reader) and only rows whose MID matters are
kept, and, when the pool's image ids are known, only rows of pool images; memory follows the kept
rows, not the file (``benches/openimages_labels.py`` reads 10M rows).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from wood_train.errors import DataError, MissingInputError

LABEL_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
MACHINE_SOURCE = "machine"
DEFAULT_MIN_CONFIDENCE = 0.5
DESCRIPTION_HEADER = ("LabelName", "DisplayName")
BLOCK_BYTES = 1 << 20  # 1 MB of CSV text per block; the reader prefetches several
MAX_EXAMPLES = 5


def _header(path: Path) -> list[str]:
    """The column names of a CSV file (quoted or not), read from its first line."""
    if not path.is_file():
        raise MissingInputError(f"file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        return [c.strip() for c in next(csv.reader([f.readline()]), [])]


def is_image_label_file(path: str | Path) -> bool:
    """Whether ``path`` has OpenImages' image-label header (ImageID,Source,LabelName,Confidence)."""
    return set(LABEL_COLUMNS) <= set(_header(Path(path)))


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """MID -> display name, from either published shape.

    ``class-descriptions-boxable.csv`` has no header (``/m/011k07,Tortoise``); the newer
    ``oidv7-class-descriptions.csv`` starts with ``LabelName,DisplayName``. Names may hold commas
    (quoted), e.g. ``"/m/0h8n5zk","Kitchen & dining room table"``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"class descriptions not found: {path}")
    names: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if line_no == 1 and tuple(c.strip() for c in row) == DESCRIPTION_HEADER:
                continue
            if not row:
                continue
            if len(row) != 2 or not row[0].startswith("/"):
                raise DataError(
                    f"{path}, line {line_no}: expected 'MID,DisplayName' (e.g. /m/07jdr,Train), "
                    f"got {row[:3]}; is this an OpenImages class-descriptions file?"
                )
            names[row[0].strip()] = row[1].strip()
    if not names:
        raise DataError(f"{path}: no class descriptions in the file")
    return names


def read_label_hierarchy(path: str | Path) -> dict[str, set[str]]:
    """MID -> MIDs directly under it as ``Subcategory`` in ``bbox_labels_600_hierarchy.json``.

    ``Part`` links are not followed: a wheel is part of a car, yet an image tagged Wheel need not
    hold one. A MID listed under several parents keeps every parent.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"label hierarchy not found: {path}")
    try:
        root = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: not the JSON label hierarchy ({exc})") from None
    children: dict[str, set[str]] = {}
    stack = [(root, "the root")]
    while stack:
        node, where = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("LabelName"), str):
            raise DataError(f"{path}: a node under {where} has no 'LabelName'")
        mid = node["LabelName"]
        for key in ("Subcategory", "Part"):
            kids = node.get(key, [])
            if not isinstance(kids, list):
                raise DataError(f"{path}: {key!r} of {mid} is not a list")
            if key == "Subcategory":
                children.setdefault(mid, set()).update(
                    k["LabelName"] for k in kids if isinstance(k, dict) and "LabelName" in k
                )
            stack.extend((kid, mid) for kid in kids)
    return children


def with_descendants(mid_class: dict[str, str], children: dict[str, set[str]]) -> dict[str, str]:
    """``mid_class`` extended to every ``Subcategory`` descendant.

    A descendant takes the class of its nearest mapped ancestor (Limousine lies under Car under
    Vehicle: mapped to car, not vehicle); a mapped MID keeps its own class.
    """
    out = dict(mid_class)
    frontier = sorted(mid_class.items())
    while frontier:  # breadth first from every mapped MID at once: the nearest ancestor wins
        reached: dict[str, str] = {}
        for mid, name in frontier:
            for child in sorted(children.get(mid, ())):
                if child not in out and child not in reached:
                    reached[child] = name
        out.update(reached)
        frontier = sorted(reached.items())
    return out


@dataclass
class LabelScan:
    """What reading the label files found.

    ``present`` maps an ImageID to the MIDs (of those that matter) its labels say are present.
    ``counts``: rows, kept_rows (MIDs that matter, pool images), present_images,
    verified_absent (human Confidence-0 rows), machine_below_threshold, machine_overruled (machine
    at or above the threshold, but a human said absent), unknown_rows (MIDs missing from the class
    descriptions). ``unknown_mids`` holds a few of those MIDs with their row counts.
    """

    present: dict[str, tuple[str, ...]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    unknown_mids: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    def lookup(self, item) -> tuple[str, ...] | None:
        """The present MIDs of a pool file (a ``PoolFile``), found by its ImageID (file stem)."""
        return self.present.get(image_id_of(item.relpath))

    def summary(self) -> str:
        c = self.counts
        text = (
            f"labels: {c['rows']} rows in {len(self.files)} file(s), {c['kept_rows']} about the "
            f"classes; {c['present_images']} images hold one; ignored: {c['verified_absent']} "
            f"verified absent, {c['machine_below_threshold']} machine below threshold, "
            f"{c['machine_overruled']} machine overruled by a human"
        )
        if c["unknown_rows"]:
            shown = ", ".join(f"{m} ({n})" for m, n in self.unknown_mids.most_common(MAX_EXAMPLES))
            text += f"; {c['unknown_rows']} rows name a MID not in the class descriptions: {shown}"
        return text


def _confidence(path: Path, column: pa.Array, lines: pa.Array) -> pa.Array:
    """A Confidence column as float64 in [0, 1], or an error naming the first bad line."""
    try:
        values = pc.cast(column, pa.float64())
    except pa.ArrowInvalid:
        values = None
    if values is not None and values.null_count == 0 and len(values):
        low, high = pc.min_max(values).values()
        if low.as_py() >= 0.0 and high.as_py() <= 1.0:
            return values
    for text, line in zip(column.to_pylist(), lines.to_pylist()):
        try:
            number = float(text)
        except (TypeError, ValueError):
            number = float("nan")
        if not 0.0 <= number <= 1.0:
            raise DataError(
                f"{path}, line {line}: Confidence {text!r} is not a number in [0, 1]; "
                "OpenImages labels hold 0 or 1 (human) or a fraction (machine)"
            )
    return values


def scan_label_files(
    paths: Sequence[str | Path],
    mids: Iterable[str],
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    known_mids: Iterable[str] | None = None,
    image_ids: Iterable[str] | None = None,
) -> LabelScan:
    """Which images the published label files say hold one of ``mids``.

    Parameters
    ----------
    paths
        Human-verified and/or machine-generated image-label CSVs, in any order.
    mids
        The MIDs that matter (the foreground classes, their descendants included).
    min_confidence
        Machine labels count from this confidence up.
    known_mids
        The MIDs of the class descriptions; rows naming any other MID are counted as unknown.
    image_ids
        When given, only rows of these images are kept (the pool's ImageIDs).
    """
    if not 0.0 < min_confidence <= 1.0:
        raise DataError(f"--min-tag-confidence must be in (0, 1], got {min_confidence}")
    wanted = pa.array(sorted(set(mids)), pa.string())
    known = pa.array(sorted(set(known_mids)), pa.string()) if known_mids is not None else None
    pool_ids = pa.array(sorted(set(image_ids)), pa.string()) if image_ids is not None else None
    scan, kept = LabelScan(), []
    for path in map(Path, paths):
        scan.files.append(str(path))
        kept.extend(_scan_one(path, wanted, known, pool_ids, scan))
    _decide(scan, kept, min_confidence)
    return scan


def _scan_one(path, wanted, known, pool_ids, scan: LabelScan) -> list[pd.DataFrame]:
    header = _header(path)
    missing = [c for c in LABEL_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path}: not an OpenImages image-label file: no column(s) {missing} (header "
            f"{header[:6]}); expected {','.join(LABEL_COLUMNS)}"
        )
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
        convert_options=pacsv.ConvertOptions(
            include_columns=list(LABEL_COLUMNS),
            column_types={c: pa.string() for c in LABEL_COLUMNS},
        ),
    )
    kept, line = [], 2  # line 1 is the header
    for batch in reader:
        labels = batch.column("LabelName")
        if known is not None:
            unknown = pc.invert(pc.is_in(labels, value_set=known))
            n_unknown = pc.sum(unknown).as_py() or 0
            if n_unknown:
                scan.counts["unknown_rows"] += n_unknown
                names = pc.value_counts(pc.filter(labels, unknown))
                scan.unknown_mids.update(
                    {v["values"]: v["counts"] for v in names.to_pylist()[:1000]}
                )
        keep = pc.is_in(labels, value_set=wanted)
        if pool_ids is not None:
            keep = pc.and_(keep, pc.is_in(batch.column("ImageID"), value_set=pool_ids))
        rows = pc.indices_nonzero(keep)
        if len(rows):  # only kept rows are parsed further; their line numbers name errors
            picked = batch.take(rows)
            lines = pc.add(rows, pa.scalar(line, pa.uint64()))
            frame = pa.RecordBatch.from_arrays(
                [picked.column("ImageID"), picked.column("Source"), picked.column("LabelName"),
                 _confidence(path, picked.column("Confidence"), lines)],
                names=list(LABEL_COLUMNS),
            )  # fmt: skip
            kept.append(frame.to_pandas())
        scan.counts["rows"] += batch.num_rows
        line += batch.num_rows
    return kept


def _decide(scan: LabelScan, kept: list[pd.DataFrame], min_confidence: float) -> None:
    if not kept:
        return
    rows = pd.concat(kept, ignore_index=True)
    scan.counts["kept_rows"] = len(rows)
    machine = rows["Source"].str.strip().str.lower() == MACHINE_SOURCE
    keys = ["ImageID", "LabelName"]
    human = rows[~machine].groupby(keys)["Confidence"].max()  # any human "present" wins
    scan.counts["verified_absent"] = int((rows.loc[~machine, "Confidence"] == 0).sum())
    machine_rows = rows[machine]
    below = machine_rows["Confidence"] < min_confidence
    scan.counts["machine_below_threshold"] = int(below.sum())
    confident = machine_rows[~below].groupby(keys).size().index
    has_human = confident.isin(human.index)  # human beats machine for the same image and MID
    scan.counts["machine_overruled"] = int(confident.isin(human.index[human == 0]).sum())
    present = human.index[human > 0].union(confident[~has_human])
    pairs = present.to_frame(index=False).sort_values(keys)
    grouped: dict[str, list[str]] = {}
    for image, label in zip(pairs["ImageID"].tolist(), pairs["LabelName"].tolist()):
        grouped.setdefault(image, []).append(label)  # sorted pairs: ids and MIDs in order
    scan.present = {image: tuple(labels) for image, labels in grouped.items()}
    scan.counts["present_images"] = len(scan.present)


def image_id_of(relpath: str) -> str:
    """OpenImages files are named ``<ImageID>.jpg``: the ImageID of a pool path is its stem."""
    name = relpath.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name
