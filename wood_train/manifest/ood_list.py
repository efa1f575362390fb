"""The trainer's entry: the hard-OoD image paths of a manifest or of a plain ``ood_list.txt``."""

from __future__ import annotations

from pathlib import Path

from wood_train.errors import MissingInputError
from wood_train.manifest.contract import TRAINED_VERDICT, ManifestError
from wood_train.manifest.validate import validate_manifest


def read_ood_list_txt(
    list_path: str | Path, image_root: str | Path | None, check_files: bool = True
) -> list[Path]:
    """The reference implementation's ``ood_list.txt``: one image path per line, relative to
    ``image_root`` (its ``--ood_root``). Blank lines are skipped; duplicates and missing files are
    errors naming the line."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise MissingInputError(f"OoD list not found: {list_path}")
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
