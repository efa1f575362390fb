"""What the review app draws: images for the screen, the CAM beside them, and its legend.

Images travel inside the page as ``data:`` URIs, never as ``/media`` URLs: they reach only a
session that is signed in, and nothing stays fetchable after the tab closes. Small images
(64 px from the world, icons in a web pool) are sent at their own size as PNG and enlarged by the
browser with nearest-neighbour sampling, by a whole factor, so every pixel is shown as it is.
Larger images are scaled down and sent as JPEG.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

DISPLAY_SIDE = 720  # long side of the single view's image (and of its CAM beside it)
THUMB_SIDE = 320  # long side of a grid thumbnail; the zoom shows the same bytes enlarged
DEFAULT_CAM_OPACITY = 0.5
JPEG_QUALITY = 85

# "jet"-like ramp (blue -> cyan -> yellow -> red), enough to read a CAM without matplotlib
_RAMP = np.array(
    [[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Shown:
    """An image ready for the page: its ``data:`` URI and the size to draw it at."""

    uri: str
    width: int  # CSS pixels, a whole multiple of the image's own width when enlarged
    height: int
    pixelated: bool  # enlarged: draw with nearest-neighbour sampling


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """uint8 (H, W) heatmap -> (H, W, 3) uint8 colours on the ramp."""
    position = heatmap.astype(np.float32) / 255.0 * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def fit(rgb: np.ndarray, side: int) -> Image.Image:
    """The image scaled down (never up) so its long side is at most ``side``."""
    img = Image.fromarray(rgb)
    scale = side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)  # fmt: skip
    return img


def zoom_factor(size: tuple[int, int], side: int) -> int:
    """The whole factor that brings an image's long side closest to ``side`` without passing it
    (1 for images already as large)."""
    return max(1, side // max(size))


def overlay_cam(img: Image.Image, heatmap: np.ndarray, opacity: float) -> Image.Image:
    """The CAM coloured on the ramp and blended over the image with ``opacity`` (0 = image only,
    1 = CAM only).

    The stored heatmap covers the whole frame (it was pooled from the full image), so it is
    stretched bilinearly to the image's size and aspect ratio.
    """
    cam = Image.fromarray(np.asarray(heatmap, dtype=np.uint8)).resize(
        img.size, Image.Resampling.BILINEAR
    )
    colours = Image.fromarray(colorize(np.asarray(cam)))
    return Image.blend(img.convert("RGB"), colours, float(np.clip(opacity, 0.0, 1.0)))


def _encode(img: Image.Image, lossless: bool) -> str:
    buffer = io.BytesIO()
    if lossless:
        img.save(buffer, format="PNG", optimize=False)
        kind = "png"
    else:
        img.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
        kind = "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def render(
    rgb: np.ndarray, side: int, heatmap: np.ndarray | None = None, opacity: float = 0.0
) -> Shown:
    """The image (or, with ``heatmap``, its CAM overlay) ready to draw with long side ~``side``.

    An image smaller than half of ``side`` is kept at its own pixels (PNG) and drawn enlarged by
    a whole factor; a larger one is scaled down to ``side`` (JPEG).
    """
    img = fit(rgb, side)
    factor = zoom_factor(img.size, side)
    if heatmap is not None:
        img = overlay_cam(img, heatmap, opacity)
    small = factor > 1
    return Shown(_encode(img, lossless=small), img.width * factor, img.height * factor, small)


def img_tag(shown: Shown, alt: str, css_class: str = "") -> str:
    """An ``<img>`` for ``st.html``: the data URI, alt text, size and sampling."""
    classes = " ".join(
        filter(None, ["hardood-img", "pixelated" if shown.pixelated else "", css_class])
    )
    return (
        f'<img class="{classes}" src="{shown.uri}" alt="{html.escape(alt, quote=True)}" '
        f'width="{shown.width}" height="{shown.height}">'
    )


def legend_html(class_name: str) -> str:
    """The CAM's colour legend: the ramp from low to high activation of ``class_name``."""
    stops = ", ".join(f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in _RAMP)
    name = html.escape(class_name)
    return (
        '<div class="hardood-legend" role="img" '
        f'aria-label="CAM colours: blue is low, red is high activation of {name}">'
        f'<span>low</span><span class="hardood-ramp" style="background: linear-gradient('
        f'to right, {stops})"></span><span>high activation of <b>{name}</b></span></div>'
    )
