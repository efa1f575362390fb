"""What the review app draws: images scaled for the screen and the CAM overlay, as JPEG bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

DISPLAY_SIDE = 960  # long side of the single view's image
THUMB_SIDE = 256  # long side of a grid thumbnail
CAM_ALPHA = 0.45

# "jet"-like ramp (blue -> cyan -> yellow -> red), enough to read a CAM without matplotlib
_RAMP = np.array(
    [[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]],
    dtype=np.float32,
)


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
                         Image.Resampling.BILINEAR)  # fmt: skip
    return img


def overlay_cam(img: Image.Image, heatmap: np.ndarray, alpha: float = CAM_ALPHA) -> Image.Image:
    """Blend the square CAM, upsampled bilinearly to the image size, over the image.

    The stored heatmap covers the whole image (it was pooled from the full frame), so it is
    stretched to the image's aspect ratio.
    """
    cam = Image.fromarray(np.asarray(heatmap, dtype=np.uint8)).resize(
        img.size, Image.Resampling.BILINEAR
    )
    colours = Image.fromarray(colorize(np.asarray(cam)))
    return Image.blend(img.convert("RGB"), colours, alpha)


def render_jpeg(rgb: np.ndarray, side: int, heatmap: np.ndarray | None = None) -> bytes:
    """Scale, optionally overlay the CAM, encode as JPEG (small and quick to send)."""
    img = fit(rgb, side)
    if heatmap is not None:
        img = overlay_cam(img, heatmap)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
