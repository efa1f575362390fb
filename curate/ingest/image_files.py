"""Find an image's file on disk, only inside the roots registered in the store.

The app and the export never open a path taken from a row as it stands: the root is resolved, the
relative path is joined and resolved (following symlinks), and the result must lie inside the
resolved root. ``read_image_bytes`` also checks that the bytes hash to the image's SHA-256, so a
crafted row can only ever serve the exact file content that was mined.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path, PurePosixPath

from curate import store
from wood_train.errors import DataError


def contained_file(root: str | Path, relpath: str) -> Path | None:
    """``root / relpath`` resolved, or None if it is not a regular file inside ``root``.

    Rejects absolute and ``..`` relative paths, NUL bytes, roots that are not absolute folders,
    and symlinks (anywhere along the path) that lead out of the root.
    """
    if not relpath or "\x00" in relpath or "\x00" in str(root):
        return None
    rel = PurePosixPath(relpath.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not Path(root).is_absolute():
        return None
    try:
        real_root = Path(root).resolve(strict=True)
        candidate = (real_root / rel).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
        return None
    if not real_root.is_dir() or not candidate.is_relative_to(real_root):
        return None
    return candidate if candidate.is_file() else None


def image_locations(conn: sqlite3.Connection, sha256: str) -> list[tuple[str, str]]:
    """Every registered (root, relpath) of an image, in a stable order."""
    rows = conn.execute(
        "SELECT r.path AS root, p.relpath FROM image_paths p JOIN roots r USING (root_id) "
        "WHERE p.sha256 = ? ORDER BY p.root_id, p.relpath",
        (sha256,),
    ).fetchall()
    return [(row["root"], row["relpath"]) for row in rows]


def _not_found(
    conn: sqlite3.Connection, sha256: str, locations: list[tuple[str, str]]
) -> Exception:
    if not locations:
        return FileNotFoundError(
            f"image {sha256[:12]}: no path registered in {store.db_path(conn)}"
        )
    root, relpath = locations[0]
    return FileNotFoundError(
        f"image {sha256[:12]}: no registered path is a file inside its root "
        f"(first: {relpath!r} under {root}); was the pool moved?"
    )


def resolve_image_file(conn: sqlite3.Connection, sha256: str) -> Path:
    """The first registered path of an image that is a file inside its root."""
    locations = image_locations(conn, sha256)
    for root, relpath in locations:
        found = contained_file(root, relpath)
        if found is not None:
            return found
    raise _not_found(conn, sha256, locations)


def read_image_bytes(conn: sqlite3.Connection, sha256: str) -> tuple[bytes, Path]:
    """The image's bytes and file: the first registered path whose bytes hash to ``sha256``."""
    locations = image_locations(conn, sha256)
    changed = None
    for root, relpath in locations:
        path = contained_file(root, relpath)
        if path is None:
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return data, path
        changed = path
    if changed is not None:
        raise DataError(f"{changed}: file content changed since it was mined (sha256 differs)")
    raise _not_found(conn, sha256, locations)
