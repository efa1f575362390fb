"""Where candidate images come from: a folder, a text file of paths, or a CSV with tags.

``iter_pool(source)`` yields one ``PoolFile`` per listed file, lazily, so a pool of millions is
never held in memory:

- a directory: every image file below it (recursive, sorted, hidden entries skipped);
- a ``.txt``/``.lst`` file: one path per line (``#`` comments and blank lines skipped);
- a ``.csv`` file: a path column and an optional tags column (OpenImages-style image-level labels,
  ``;`` or ``,`` separated).

Relative paths in a list or CSV are relative to that file's folder. Tags can also come from a
separate ``--tags-csv`` (``TagTable``), matched by path relative to the pool folder, by absolute
path, or by file stem (OpenImages ``ImageID``); several rows for one image are merged.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from curate.ingest.openimages import with_descendants
from wood_train.errors import ConfigError, DataError, MissingInputError

POOL_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
LIST_SUFFIXES = (".txt", ".lst")
PATH_COLUMNS = ("path", "file", "filepath", "image", "ImageID")
TAG_COLUMNS = ("tags", "labels", "LabelName")
DEFAULT_TAG_MAP = Path(__file__).with_name("voc_openimages_tags.csv")  # class,mid,name


@dataclass(frozen=True)
class PoolFile:
    """One listed file: its root folder (absolute), path under the root, and tags (or None)."""

    root: Path
    relpath: str
    tags: tuple[str, ...] | None = None

    @property
    def path(self) -> Path:
        return self.root / self.relpath


def split_tags(text: str | None) -> tuple[str, ...]:
    """``"Cat; Sofa bed,Table"`` -> ``("Cat", "Sofa bed", "Table")``."""
    if not text:
        return ()
    return tuple(t.strip() for t in re.split(r"[;,]", text) if t.strip())


def _walk_directory(root: Path) -> Iterator[PoolFile]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(POOL_IMAGE_SUFFIXES):
                continue
            relpath = os.path.relpath(os.path.join(folder, name), root)
            yield PoolFile(root, Path(relpath).as_posix())


def _split_listed(path_text: str, base: Path) -> PoolFile:
    path = Path(path_text)
    full = (path if path.is_absolute() else base / path).resolve()
    if full.is_relative_to(base):
        return PoolFile(base, full.relative_to(base).as_posix())
    return PoolFile(full.parent, full.name)


def _iter_text_list(source: Path) -> Iterator[PoolFile]:
    base = source.resolve().parent
    # surrogateescape: a listed name that is not valid UTF-8 keeps its bytes (see store.path_value)
    with open(source, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            text = line.strip()
            if text and not text.startswith("#"):
                yield _split_listed(text, base)


def _pick_column(header: list[str], wanted: str | None, candidates: tuple[str, ...], source: Path):
    if wanted:
        if wanted not in header:
            raise DataError(f"{source}: no column {wanted!r}; columns are {header}")
        return wanted
    for name in candidates:
        if name in header:
            return name
    return None


def _iter_csv(source: Path, path_column: str | None, tags_column: str | None) -> Iterator[PoolFile]:
    base = source.resolve().parent
    with open(source, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        path_col = _pick_column(header, path_column, PATH_COLUMNS, source)
        if path_col is None:
            raise DataError(
                f"{source}: no path column; expected one of {PATH_COLUMNS}, got {header}"
            )
        tags_col = _pick_column(header, tags_column, TAG_COLUMNS, source)
        for line_no, row in enumerate(reader, start=2):
            text = (row.get(path_col) or "").strip()
            if not text:
                raise DataError(f"{source}, line {line_no}: empty {path_col!r}")
            item = _split_listed(text, base)
            tags = split_tags(row.get(tags_col)) if tags_col else None
            yield PoolFile(item.root, item.relpath, tags)


def iter_pool(
    source: str | Path, path_column: str | None = None, tags_column: str | None = None
) -> Iterator[PoolFile]:
    """Yield every file a pool source lists (see the module docstring for the three forms)."""
    source = Path(source)
    if source.is_dir():
        yield from _walk_directory(source.resolve())
    elif not source.exists():
        raise MissingInputError(f"pool source not found: {source}")
    elif source.suffix.lower() == ".csv":
        yield from _iter_csv(source, path_column, tags_column)
    elif source.suffix.lower() in LIST_SUFFIXES:
        yield from _iter_text_list(source)
    else:
        raise ConfigError(
            f"{source}: a pool source is a folder, a .txt/.lst list of paths, or a .csv with a "
            "path column"
        )


class TagTable:
    """Image-level tags from a CSV, looked up by relative path, absolute path or file stem."""

    def __init__(
        self, path: str | Path, path_column: str | None = None, tags_column: str | None = None
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingInputError(f"tags CSV not found: {self.path}")
        self._tags: dict[str, set[str]] = {}
        with open(self.path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            key_col = _pick_column(header, path_column, PATH_COLUMNS, self.path)
            tags_col = _pick_column(header, tags_column, TAG_COLUMNS, self.path)
            if key_col is None or tags_col is None:
                raise DataError(
                    f"{self.path}: needs a path column ({PATH_COLUMNS}) and a tags column "
                    f"({TAG_COLUMNS}); got {header}"
                )
            for row in reader:
                key = (row.get(key_col) or "").strip()
                if key:
                    self._tags.setdefault(key, set()).update(split_tags(row.get(tags_col)))

    def lookup(self, item: PoolFile) -> tuple[str, ...] | None:
        for key in (item.relpath, str(item.path), Path(item.relpath).stem):
            if key in self._tags:
                return tuple(sorted(self._tags[key]))
        return None


def load_tag_map(path: str | Path | None = None) -> dict[str, set[str]]:
    """Class name -> the lower-cased tags that name it; default: the shipped VOC -> OpenImages map.

    A map is a CSV with a ``class`` column and a ``mid`` column (OpenImages machine ids such as
    ``/m/07jdr``; a ``name`` column beside them, e.g. ``Train``, is matched too), or the older
    ``class,tag`` shape with display names.
    """
    path = Path(path) if path else DEFAULT_TAG_MAP
    if not path.is_file():
        raise MissingInputError(f"tag map not found: {path}")
    mapping: dict[str, set[str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        tag_columns = [c for c in ("mid", "name", "tag") if c in columns]
        if "class" not in columns or not ({"mid", "tag"} & columns):
            raise DataError(
                f"{path}: a tag map needs a 'class' column and a 'mid' (or 'tag') column; "
                f"got {sorted(columns)}"
            )
        for line_no, row in enumerate(reader, start=2):
            name = (row["class"] or "").strip()
            tags = {(row[c] or "").strip().lower() for c in tag_columns} - {""}
            if not name or not tags:
                raise DataError(f"{path}, line {line_no}: empty class or tag")
            mapping.setdefault(name, set()).update(tags)
    return mapping


def tag_map_mids(tag_map: dict[str, set[str]]) -> dict[str, str]:
    """The OpenImages MIDs (``/m/...``, ``/g/...``) of a tag map -> their class."""
    return {tag: name for name, tags in tag_map.items() for tag in tags if tag.startswith("/")}


def foreground_tags(
    class_names: list[str],
    tag_map: dict[str, set[str]],
    descriptions: dict[str, str] | None = None,
    hierarchy: dict[str, set[str]] | None = None,
) -> dict[str, str]:
    """Lower-cased tag or MID -> the foreground class it names.

    Every class also matches its own name. With OpenImages' ``descriptions`` (MID -> name), names
    in the map gain their MIDs and MIDs their names; with the label ``hierarchy``
    (``openimages.read_label_hierarchy``), every ``Subcategory`` descendant of a mapped MID names
    the class too (Canoe under Boat), by MID and by name.
    """
    out: dict[str, str] = {}
    for name in class_names:
        for tag in {name.lower(), *tag_map.get(name, ())}:
            out[tag] = name
    names = {mid.lower(): text.lower() for mid, text in (descriptions or {}).items()}
    mid_of = {text: mid for mid, text in names.items()}
    for tag, name in list(out.items()):
        if tag in mid_of:
            out.setdefault(mid_of[tag], name)
    if hierarchy:
        children = {m.lower(): {c.lower() for c in kids} for m, kids in hierarchy.items()}
        mids = {tag: name for tag, name in out.items() if tag.startswith("/")}
        for mid, name in with_descendants(mids, children).items():
            out.setdefault(mid, name)
    for tag, name in list(out.items()):
        if tag in names:
            out.setdefault(names[tag], name)
    return out
