"""Find an image's file on disk, only inside the roots registered in the store, and read it safely.

The app, the export, ingest and scoring never open a path taken from a row or a listing as it
stands: the root is resolved, the relative path is joined and resolved (following symlinks), and
the result must lie inside the resolved root (``locate_in_root``, the one containment rule).
``read_pool_file`` then opens it without blocking, reads only a regular file, and refuses one
above a size cap before reading it, so a FIFO named ``x.jpg`` or a link to ``/dev/zero`` cannot
hang or exhaust a run. ``read_image_bytes`` also checks that the bytes hash to the image's
SHA-256, so a crafted row can only ever serve the exact file content that was mined.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

from curate import store
from wood_train.errors import DataError

DEFAULT_MAX_FILE_MB = 256.0
# refusal reasons (recorded per file like the decoder's reasons)
OUTSIDE_ROOT = "outside_pool_root"
NOT_REGULAR = "not_regular_file"
TOO_LARGE = "file_too_large"
MISSING = "missing_file"
UNREADABLE = "unreadable_file"
BAD_PATH = "bad_relative_path"
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


class RefusedFile(Exception):
    """A pool file that is not read: ``reason`` is one of the reasons above, ``detail`` says why."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = Path(path), reason, detail
        shown = store.shown_path(self.path)
        super().__init__(
            f"{shown}: {reason.replace('_', ' ')}" + (f" ({detail})" if detail else "")
        )


def resolve_root(root: str | Path) -> tuple[Path | None, str | None]:
    """``(root resolved, None)``, ``(None, MISSING)`` when it cannot be resolved, or
    ``(None, BAD_PATH)`` for a root that is not an absolute path.

    ``locate_in_root`` calls it for every file; a caller that locates many files under one root
    resolves it once and passes the result on (``resolved_root``).
    """
    if "\x00" in str(root) or not Path(root).is_absolute():
        return None, BAD_PATH
    try:
        return Path(root).resolve(strict=True), None
    except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
        return None, MISSING


def locate_in_root(
    root: str | Path,
    relpath: str,
    resolved_root: tuple[Path | None, str | None] | None = None,
) -> tuple[Path | None, str | None]:
    """``(root / relpath resolved, None)``, or ``(None, reason)`` when the file may not be used.

    Rejects absolute and ``..`` relative paths, NUL bytes and roots that are not absolute folders
    (``bad_relative_path``), missing files, and symlinks (anywhere along the path) that lead out
    of the root (``outside_pool_root``). It does not open the file: see ``read_pool_file``.
    ``resolved_root`` is ``resolve_root(root)`` computed once for many files under one root; the
    file is then looked up, and contained, under the root as it was resolved.
    """
    # plain strings and os.path: this runs for every file at ingest and again at scoring, where
    # pathlib's objects cost more than the checks themselves
    root_text = os.fspath(root)
    if not relpath or "\x00" in relpath or "\x00" in root_text:
        return None, BAD_PATH
    rel = relpath.replace("\\", "/")
    if rel.startswith("/") or ".." in rel.split("/") or not os.path.isabs(root_text):
        return None, BAD_PATH
    real_root, reason = resolve_root(root) if resolved_root is None else resolved_root
    if real_root is None:
        return None, reason
    base = os.fspath(real_root)
    try:
        candidate = os.path.realpath(os.path.join(base, rel), strict=True)
    except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
        return None, MISSING
    if not os.path.isdir(base):
        return None, BAD_PATH
    if candidate != base and not candidate.startswith(base.rstrip("/") + "/"):
        return None, OUTSIDE_ROOT
    return Path(candidate), None


def contained_file(root: str | Path, relpath: str) -> Path | None:
    """``root / relpath`` resolved, or None if it is not a regular file inside ``root``."""
    found, _ = locate_in_root(root, relpath)
    try:
        return found if found is not None and stat.S_ISREG(found.stat().st_mode) else None
    except OSError:
        return None


def _kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _kind(path: str | Path) -> str | None:
    """What a path that is not a regular file is ("a socket"), or None (regular, or no stat)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else _kind_of(mode)


def read_pool_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else raises ``RefusedFile``.

    The file is opened non-blocking (a FIFO without a writer would block a plain ``open``) and
    checked on the open descriptor, so it cannot be swapped between the check and the read; at
    most ``max_bytes + 1`` bytes are read even if it grows meanwhile.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RefusedFile(path, MISSING) from None
    except OSError as exc:  # a socket (ENXIO), a folder (EISDIR), no permission ...
        kind = _kind(path)
        if kind is not None:
            raise RefusedFile(path, NOT_REGULAR, kind) from None
        raise RefusedFile(path, UNREADABLE, os.strerror(exc.errno or 0)) from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedFile(path, NOT_REGULAR, _kind_of(info.st_mode))
        limit = f"{info.st_size} bytes > --max-file-mb {max_bytes / 2**20:g}"
        if info.st_size > max_bytes:
            raise RefusedFile(path, TOO_LARGE, limit)
        try:
            # ask for the size fstat gave, plus a byte to notice growth: asking for max_bytes + 1
            # at once allocates (maps and unmaps) a buffer that large for every small file
            data = f.read(info.st_size + 1)
            if len(data) > info.st_size:  # it grew since fstat (or fstat says 0): read on
                data += f.read(max_bytes + 1 - len(data))
        except OSError as exc:
            raise RefusedFile(path, UNREADABLE, os.strerror(exc.errno or 0)) from None
    if len(data) > max_bytes:
        raise RefusedFile(path, TOO_LARGE, f"grew past --max-file-mb {max_bytes / 2**20:g}")
    return data


def image_locations(conn: sqlite3.Connection, sha256: str) -> list[tuple[str, str]]:
    """Every registered (root, relpath) of an image, in a stable order."""
    rows = conn.execute(
        "SELECT r.path AS root, p.relpath FROM image_paths p JOIN roots r USING (root_id) "
        "WHERE p.sha256 = ? ORDER BY p.root_id, p.relpath",
        (sha256,),
    ).fetchall()
    return [(store.path_text(row["root"]), store.path_text(row["relpath"])) for row in rows]


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
        f"(first: {store.shown_path(relpath)!r} under {store.shown_path(root)}); was the pool moved?"
    )


def resolve_image_file(conn: sqlite3.Connection, sha256: str) -> Path:
    """The first registered path of an image that is a file inside its root."""
    locations = image_locations(conn, sha256)
    for root, relpath in locations:
        found = contained_file(root, relpath)
        if found is not None:
            return found
    raise _not_found(conn, sha256, locations)


def first_verified(
    sha256: str, locations: list[tuple[str, str]]
) -> tuple[bytes | None, tuple[str, str] | None]:
    """The bytes and (root, relpath) of the first location whose file lies inside its root and
    hashes to ``sha256``; else (None, the last location whose file exists but differs, or None)."""
    changed = None
    for root, relpath in locations:
        path = contained_file(root, relpath)
        if path is None:
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == sha256:
            return data, (root, relpath)
        changed = (root, relpath)
    return None, changed


def read_image_bytes(conn: sqlite3.Connection, sha256: str) -> tuple[bytes, Path]:
    """The image's bytes and file: the first registered path whose bytes hash to ``sha256``."""
    locations = image_locations(conn, sha256)
    data, location = first_verified(sha256, locations)
    if data is not None:
        return data, Path(location[0]) / location[1]
    if location is not None:
        changed = Path(location[0]) / location[1]
        raise DataError(f"{changed}: file content changed since it was mined (sha256 differs)")
    raise _not_found(conn, sha256, locations)
