"""Planted odd and broken image files: each is normalised to RGB or refused with its reason."""

import io

import numpy as np
import pytest
from PIL import Image

from wood_train.data.imageio import (
    ImageDecodeError,
    decode_image,
    read_image,
    read_label_png,
    write_label_png,
)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_grayscale_palette_rgba_cmyk_become_rgb():
    gray = Image.fromarray(np.full((5, 7), 100, np.uint8), "L")
    palette = gray.convert("P")
    rgba = Image.new("RGBA", (7, 5), (255, 0, 0, 0))  # fully transparent red -> black
    cmyk = Image.new("CMYK", (7, 5), (0, 255, 255, 0))  # pure red in CMYK
    for img, fmt in ((gray, "PNG"), (palette, "PNG"), (rgba, "PNG"), (cmyk, "JPEG")):
        arr = decode_image(_encode(img, fmt))
        assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8
    assert decode_image(_encode(rgba, "PNG")).max() == 0
    red = decode_image(_encode(cmyk, "JPEG"))
    assert red[..., 0].mean() > 200 and red[..., 1].mean() < 60


def test_16bit_is_scaled_not_clipped():
    arr = np.linspace(0, 65535, 20, dtype=np.uint16).reshape(4, 5)
    out = decode_image(_encode(Image.fromarray(arr), "PNG"))
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255
    assert len(np.unique(out[..., 0])) > 10


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (8, 4), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(_encode(img, "JPEG", exif=exif))
    assert out.shape[:2] == (8, 4)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = io.BytesIO()
    frames[0].save(data, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(data.getvalue())
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 50


@pytest.mark.parametrize(
    "payload, reason",
    [(b"", "empty_file"), (b"this is not an image at all", "not_an_image")],
)
def test_broken_bytes_have_reasons(payload, reason):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(payload, "bad.jpg")
    assert info.value.reason == reason and "bad.jpg" in str(info.value)


def test_truncated_file_names_the_file(tmp_path):
    data = _encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG"
    )
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as info:
        read_image(path)
    assert info.value.reason == "truncated" and str(path) in str(info.value)


def test_decompression_bomb_is_refused():
    data = _encode(Image.new("L", (4000, 3000)), "PNG")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, "big.png", max_pixels=1_000_000)
    assert info.value.reason == "too_large"


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        read_image(tmp_path / "nope.jpg")


def test_label_png_round_trip(tmp_path):
    labels = np.array([[0, 1, 255], [2, 3, 0]], np.uint8)
    write_label_png(labels, tmp_path / "m.png")
    assert np.array_equal(read_label_png(tmp_path / "m.png"), labels)
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P" and img.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1


def test_refusal_reasons_are_readable():
    """A reason names the file and the problem, never an object repr such as <_io.BytesIO ...>."""
    jpeg = _encode(Image.new("RGB", (40, 30), (9, 99, 199)), "JPEG")
    png = _encode(Image.new("RGB", (40, 30)), "PNG")
    broken = {
        "text.jpg": b"hello, not an image",
        "header_only.png": png[:16],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "garbage_after_header.jpg": jpeg[:4] + bytes(200),
    }
    for name, data in broken.items():
        try:
            decode_image(data, name)
        except ImageDecodeError as exc:
            assert str(exc).startswith(f"{name}: cannot decode image ({exc.reason})")
            assert "object at 0x" not in str(exc) and "<_io" not in str(exc), str(exc)
        else:
            pytest.fail(f"{name} decoded")
