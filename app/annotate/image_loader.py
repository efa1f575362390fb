"""The images the app shows, read once and cached: verified bytes from an allowed root, rendered.

Every image is found through the store's registered roots (``curate.ingest.image_files``): the
path must resolve inside its root and the bytes must hash to the image's SHA-256. With
``--image-root`` only roots inside those folders count. What an annotator reads when an image
cannot be shown names the file relative to its root, never an absolute path.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import streamlit as st

from app.annotate.images import Shown, render
from curate.ingest.image_files import first_verified, image_locations
from curate.review import leases
from wood_train.data.imageio import ImageDecodeError, decode_image


@dataclass(frozen=True)
class Picture:
    """An image (or its CAM overlay) ready for the page, and the file name it came from."""

    shown: Shown
    file_name: str


class CannotShow(Exception):
    """An image the app cannot show; the message is safe to show to annotators."""


def allowed(root: str, image_roots: tuple[str, ...]) -> bool:
    """Whether a registered root may serve images under the ``--image-root`` allow-list."""
    if not image_roots:
        return True
    real = Path(root).resolve()
    return any(real.is_relative_to(Path(allowed_root).resolve()) for allowed_root in image_roots)


def read_verified(
    conn: sqlite3.Connection, sha256: str, image_roots: tuple[str, ...]
) -> tuple[bytes, str]:
    """The image's bytes and its path relative to its root, from the first allowed location
    whose file lies inside its root and hashes to ``sha256``."""
    locations = image_locations(conn, sha256)
    if not locations:
        raise CannotShow(f"image {sha256[:12]} has no file registered in the store")
    permitted = [(root, rel) for root, rel in locations if allowed(root, image_roots)]
    if not permitted:
        raise CannotShow(
            f"{PurePosixPath(locations[0][1]).name} lies outside the folders this app may show "
            "(--image-root)"
        )
    data, location = first_verified(sha256, permitted)
    if data is not None:
        return data, location[1]
    if location is not None:
        raise CannotShow(f"{location[1]} changed on disk since it was mined")
    raise CannotShow(f"{permitted[0][1]} is missing (was the pool moved?)")


@st.cache_data(max_entries=1024, show_spinner=False)
def load_picture(
    db: str,
    _conn: sqlite3.Connection,
    sha256: str,
    side: int,
    with_cam: bool = False,
    opacity: float = 0.0,
    image_roots: tuple[str, ...] = (),
) -> Picture:
    """The image at ``side``, or with ``with_cam`` its CAM blended over it at ``opacity``.

    Cached per store, image and rendering; ``_conn`` (the run's connection) is not part of the key.
    """
    data, relpath = read_verified(_conn, sha256, image_roots)
    try:
        rgb = decode_image(data, relpath)
    except ImageDecodeError as exc:
        raise CannotShow(f"{relpath} cannot be decoded ({exc.reason.replace('_', ' ')})") from exc
    heatmap = leases.item_heatmap(_conn, sha256) if with_cam else None
    if with_cam and heatmap is None:
        raise CannotShow("no CAM was stored for this image")
    return Picture(render(rgb, side, heatmap, opacity), PurePosixPath(relpath).name)
