"""Robust image decoding: one function turns any image file into an RGB uint8 array or a clear error.

Handles EXIF orientation, grayscale, palette, RGBA/LA (composited on black), CMYK, 16-bit and
animated files (first frame). Anything that cannot be decoded raises ``ImageDecodeError`` with the
file name and a short machine-readable ``reason`` that curate records per image.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wood_train.errors import DataError

# Pillow's default bomb limit is ~89 Mpx (warning) / 179 Mpx (error); we refuse earlier and say so.
MAX_PIXELS = 64_000_000


class ImageDecodeError(DataError):
    """An image file that cannot be used; ``reason`` is one of REASONS."""

    REASONS = ("empty_file", "not_an_image", "truncated", "too_large", "unreadable")

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: cannot decode image ({reason})"
        super().__init__(msg + (f": {detail}" if detail else ""))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        arr = np.clip(arr / max(top, 1.0) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (arr.min(), arr.max()) if arr.size else (0.0, 1.0)
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


def _readable(exc: BaseException) -> str:
    """An exception's message for a person: object reprs (``<_io.BytesIO object at 0x...>``) out."""
    return (
        re.sub(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>", "", str(exc)).strip() or type(exc).__name__
    )


def decode_image(
    data: bytes, name: str | Path = "<bytes>", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode image bytes into an (H, W, 3) uint8 RGB array, upright per EXIF."""
    return decode_picture(data, name, max_pixels)[0]


def decode_picture(
    data: bytes, name: str | Path = "<bytes>", max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, Image.Image]:
    """``decode_image``'s array and the RGB Pillow image it holds the pixels of, so a caller that
    also resizes (thumbnails, a scoring size) does not build a second Pillow image from the array.
    """
    if not data:
        raise ImageDecodeError(name, "empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageDecodeError(name, "too_large", f"{width}x{height} pixels > {max_pixels}")
            img.seek(0)  # animated GIF/PNG/WebP: first frame
            img.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:  # Pillow's message names an in-memory buffer object
        raise ImageDecodeError(name, "not_an_image", "no known image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(name, "too_large", _readable(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        text = _readable(exc)
        reason = (
            "truncated"
            if "truncated" in text.lower() or "end of file" in text.lower()
            else "unreadable"
        )
        raise ImageDecodeError(name, reason, text) from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        pass
    try:
        rgb = _to_rgb(img)
        arr = np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(name, "unreadable", _readable(exc)) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageDecodeError(name, "unreadable", f"unexpected decoded shape {arr.shape}")
    return arr, rgb


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into an (H, W, 3) uint8 RGB array; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError(path, "unreadable", "file not found") from None
    except OSError as exc:
        raise ImageDecodeError(path, "unreadable", str(exc)) from None
    return decode_image(data, path, max_pixels)


def probe_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Check that a file is an image from its header alone; returns its (width, height).

    Cheap (Pillow reads a few kilobytes, not the pixels), so validation can look at every file
    of a list: a text file named ``.jpg`` raises ``ImageDecodeError`` here, before training.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError(path, "empty_file")
        with warnings.catch_warnings(), Image.open(path) as img:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            width, height = img.size
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(
            path, "not_an_image", "the header is not a known image format"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(path, "too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(path, "unreadable", str(exc)) from None
    if width <= 0 or height <= 0:
        raise ImageDecodeError(path, "unreadable", f"the header says {width}x{height} pixels")
    if width * height > max_pixels:
        raise ImageDecodeError(path, "too_large", f"{width}x{height} pixels > {max_pixels}")
    return width, height


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a class mask PNG as an (H, W) uint8 index array.

    VOC's ``SegmentationClass`` masks are palette (mode P) PNGs whose indices are the labels
    (255 on borders); SBD's ``SegmentationClassAug`` masks are usually grayscale (mode L). A mask
    saved in colour (RGB) is mapped back through the VOC palette; a colour outside it is refused.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.mode in ("P", "L"):
                return np.asarray(img, dtype=np.uint8).copy()
            if img.mode in ("RGB", "RGBA"):
                return _rgb_mask_to_indices(path, np.asarray(img.convert("RGB")))
            raise ImageDecodeError(
                path, "unreadable", f"a mask PNG must be palette, grayscale or RGB, got {img.mode}"
            )
    except FileNotFoundError:
        raise ImageDecodeError(path, "unreadable", "file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageDecodeError(path, "unreadable", str(exc)) from None


def _rgb_mask_to_indices(path: Path, rgb: np.ndarray) -> np.ndarray:
    palette = np.asarray(voc_palette(), dtype=np.int64).reshape(256, 3)
    codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    lookup = dict(zip(codes.tolist(), range(256)))
    pixels = (
        (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    )
    colours, inverse = np.unique(pixels, return_inverse=True)
    unknown = [c for c in colours.tolist() if c not in lookup]
    if unknown:
        shown = ", ".join(f"#{c:06x}" for c in unknown[:3])
        raise ImageDecodeError(
            path, "unreadable", f"RGB mask holds colours outside the VOC palette ({shown})"
        )
    indices = np.asarray([lookup[c] for c in colours.tolist()], dtype=np.uint8)
    return indices[inverse.reshape(pixels.shape)]


def voc_palette() -> list[int]:
    """The PASCAL VOC colour palette (256 entries, flattened RGB)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(8):
            r |= ((c >> 0) & 1) << (7 - shift)
            g |= ((c >> 1) & 1) << (7 - shift)
            b |= ((c >> 2) & 1) << (7 - shift)
            c >>= 3
        palette.extend((r, g, b))
    return palette


def write_label_png(labels: np.ndarray, path: str | Path) -> None:
    """Write an (H, W) uint8 label map as a VOC-palette PNG."""
    img = Image.fromarray(np.asarray(labels, dtype=np.uint8), "P")
    img.putpalette(voc_palette())
    img.save(path)
