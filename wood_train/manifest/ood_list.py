"""The trainer's entry: the hard-OoD images of a manifest or of a plain ``ood_list.txt``.

``load_ood_set`` validates the source completely, refuses an OoD image that is also an
in-distribution training image, and returns an ``OodSet``: the paths to train on and what a
trained model records about them (content hash, count, label policy, the export's provenance).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wood_train.errors import MissingInputError
from wood_train.manifest.contract import TRAINED_VERDICT, ManifestError, file_sha256
from wood_train.manifest.validate import image_header_problem, validate_manifest
from wood_train.progress import progress

PLAIN_LIST_POLICY = "plain list (no votes)"


@dataclass(frozen=True)
class OodSet:
    """The hard-OoD images one W-OoD run trains on, and where they came from.

    ``paths``, ``lines`` and ``sha256`` run in parallel: each image, the source line that names it
    (CSV line of a manifest, line of a plain list) and the SHA-256 of its bytes.
    """

    source: Path
    paths: list[Path]
    lines: list[int]
    sha256: list[str]
    content_sha256: str  # the manifest's files, or the list with its images' hashes
    label_policy: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a trained model keeps about its OoD set (config.yaml, summary.json, checkpoint)."""
        return {
            "source": str(self.source),
            "content_sha256": self.content_sha256,
            "num_images": len(self.paths),
            "label_policy": self.label_policy,
            "provenance": self.provenance,
        }


def read_ood_list_txt(
    list_path: str | Path, image_root: str | Path | None, check_files: bool = True
) -> tuple[list[Path], list[int]]:
    """The reference implementation's ``ood_list.txt``: one image path per line, relative to
    ``image_root`` (its ``--ood_root``). Blank lines are skipped; duplicates, missing files and
    files that are not images are errors naming the line. Returns (paths, line numbers)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise MissingInputError(f"OoD list not found: {list_path}")
    root = Path(image_root) if image_root is not None else None
    problems, paths, lines, first_line_of = [], [], [], {}
    for number, raw in enumerate(list_path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        entry = raw.strip()
        if not entry:
            continue
        path = Path(entry)
        if not path.is_absolute():
            if root is None:
                problem = (
                    f"line {number} ({entry}): a relative path, but no image root was given; "
                    "pass --ood-image-root FOLDER, the folder the list's paths are relative to"
                )
                raise ManifestError(list_path, [problem])
            path = root / path
        earlier = first_line_of.setdefault(str(path), number)
        if earlier != number:
            problems.append(f"line {number} ({entry}): duplicate of line {earlier}")
        elif check_files and not path.is_file():
            problems.append(f"line {number} ({entry}): file not found")
        elif check_files and (problem := image_header_problem(path)):
            problems.append(f"line {number} ({entry}): {problem}")
        paths.append(path)
        lines.append(number)
    if not paths and not problems:
        problems.append("the list holds no paths")
    if problems:
        raise ManifestError(list_path, problems)
    return paths, lines


def load_ood_set(
    manifest_or_list_path: str | Path,
    image_root: str | Path | None = None,
    expected_classes: list[str] | None = None,
    training_images: Sequence[Path] = (),
) -> OodSet:
    """The hard-OoD images to train on, validated: the trainer's one entry point.

    Parameters
    ----------
    manifest_or_list_path
        A manifest folder, its ``manifest.csv`` or ``manifest.meta.json`` (the ``no_foreground``
        rows are kept, after ``validate_manifest`` with file and hash checks), or a plain ``.txt``
        list as the reference implementation uses (one path per line, relative to ``image_root``).
    image_root
        Only for a ``.txt`` list: the folder its paths are relative to. A manifest names its own.
    expected_classes
        The training data's class names; a manifest mined for other classes is refused.
    training_images
        The in-distribution training images. An OoD image with the same bytes as one of them
        (a copy, or a symlink to it) is refused: it would be pushed away from its own class.

    Raises
    ------
    ManifestError
        Naming every problem by source line.
    """
    path = Path(manifest_or_list_path)
    if path.suffix == ".txt":
        paths, lines = read_ood_list_txt(path, image_root)
        hashes = [file_sha256(p) for p in progress(paths, desc="hash OoD images", unit="img")]
        digest = hashlib.sha256(hashlib.sha256(path.read_bytes()).digest())
        for sha in hashes:
            digest.update(bytes.fromhex(sha))
        ood = OodSet(path, paths, lines, hashes, digest.hexdigest(), PLAIN_LIST_POLICY)
    else:
        loaded = validate_manifest(path, expected_classes)
        trained = loaded.rows[loaded.rows["verdict"] == TRAINED_VERDICT]
        if trained.empty:
            raise ManifestError(
                path, [f"no row has verdict {TRAINED_VERDICT!r}: nothing to train on"]
            )
        provenance = {k: v for k, v in loaded.meta.items() if k != "classes"}
        ood = OodSet(
            path, loaded.ood_paths, trained["line"].tolist(), trained["sha256"].tolist(),
            loaded.content_sha256, str(loaded.meta.get("label_policy")), provenance,
        )  # fmt: skip
    _refuse_training_images(ood, training_images)
    return ood


def _refuse_training_images(ood: OodSet, training_images: Sequence[Path]) -> None:
    """Compare bytes, hashing only the training images whose size matches an OoD image's."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for index, path in enumerate(ood.paths):
        by_size[path.stat().st_size].append(index)
    problems = []
    candidates = [p for p in training_images if Path(p).stat().st_size in by_size]
    for train_path in progress(candidates, desc="compare with training images", unit="img"):
        sha = file_sha256(train_path)
        for index in by_size[Path(train_path).stat().st_size]:
            if ood.sha256[index] == sha:
                problems.append(
                    f"line {ood.lines[index]} ({ood.paths[index]}): the same image as training "
                    f"image {train_path}; a hard OoD must not be an in-distribution training "
                    "image (drop the row, or the image from the training split)"
                )
    if problems:
        raise ManifestError(ood.source, problems)


def load_ood_list(
    manifest_or_list_path: str | Path,
    image_root: str | Path | None = None,
    expected_classes: list[str] | None = None,
) -> list[Path]:
    """The hard-OoD image paths of a manifest or plain list (``load_ood_set(...).paths``)."""
    return load_ood_set(manifest_or_list_path, image_root, expected_classes).paths
