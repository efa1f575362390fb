"""Small planted data for the curate tests: image files of every awkward kind, and a tiny model.

``planted_checkpoint`` saves a real resnet18 CamNet whose 1x1 head is solved in closed form from
the backbone's own features, so images carrying class k's cue (a coloured band) score class k high
and plain noise scores low: a known answer the queue tests can assert, with no faked outputs.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wood_train.data.transforms import normalize_image
from wood_train.model.cam_net import build_cam_net
from wood_train.model.checkpoint import save_checkpoint

SIZE = 32
CLASS_NAMES = ["train", "boat", "bird"]
CUE_COLOURS = [(200, 40, 40), (40, 80, 220), (40, 200, 60)]  # one band colour per class


def noise_image(seed: int, size: int = SIZE, clutter: bool = True) -> np.ndarray:
    """Grey-brown noise with three grey blocks of clutter: distinct at a glance from any other."""
    rng = np.random.default_rng(seed)
    base = rng.integers(110, 131, size=3)
    image = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    for _ in range(3 if clutter else 0):
        h, w = rng.integers(size // 6, size // 3, size=2)
        y, x = rng.integers(0, size // 2), rng.integers(0, size - w)
        image[y : y + h, x : x + w] = rng.integers(40, 221)
    return image


def cue_image(
    class_index: int, seed: int, size: int = SIZE, band: float = 0.5, clutter: bool = True
) -> np.ndarray:
    """Noise with class ``class_index``'s colour band over the bottom ``band`` of the image."""
    image = noise_image(seed, size, clutter)
    rows = int(size * band)
    rng = np.random.default_rng(seed + 10_000)
    colour = np.asarray(CUE_COLOURS[class_index]) + rng.integers(-15, 16, size=3)
    image[size - rows :] = np.clip(colour + rng.normal(0, 6, (rows, size, 3)), 0, 255)
    return image


def save_image(image: np.ndarray, path: Path, fmt: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format=fmt, **kwargs)
    return path


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_awkward_files(folder: Path) -> dict[str, str | None]:
    """One file of each awkward kind; returns file name -> expected bad reason (None = usable)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str | None] = {}
    (folder / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "empty_file"
    data = jpeg_bytes(noise_image(1, 64))
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    expected["truncated.jpg"] = "truncated"
    (folder / "notes.jpg").write_text("not an image at all\n" * 20)
    expected["notes.jpg"] = "not_an_image"
    # 8200 x 8200 one-bit PNG: a few KB on disk, 67 Mpx decoded (over MAX_PIXELS)
    Image.new("1", (8200, 8200)).save(folder / "bomb.png")
    expected["bomb.png"] = "too_large"
    frames = [Image.fromarray(noise_image(s)) for s in (2, 3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    expected["animated.gif"] = None
    Image.fromarray(noise_image(4)).convert("CMYK").save(folder / "cmyk.jpg")
    expected["cmyk.jpg"] = None
    deep = (noise_image(5)[:, :, 0].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    expected["deep16.png"] = None
    Image.fromarray(noise_image(6)).convert("P").save(folder / "palette.png")
    expected["palette.png"] = None
    rotated = Image.fromarray(noise_image(7)[:, :20].copy())  # 20 wide, 32 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise on display
    rotated.save(folder / "exif_rotated.jpg", exif=exif)
    expected["exif_rotated.jpg"] = None
    return expected


def planted_checkpoint(path: Path, class_names=CLASS_NAMES, seed: int = 0, scale: float = 40.0):
    """Save a resnet18 CamNet whose head separates the cue colours; returns the weights hash."""
    torch.manual_seed(seed)
    model = build_cam_net("resnet18", len(class_names), output_stride=16, frozen_bn=True).eval()
    with torch.no_grad():
        means = []
        for k in range(len(class_names)):
            x = torch.stack([normalize_image(cue_image(k, 500 + s)) for s in range(8)])
            means.append(torch.nn.functional.normalize(model.forward_features(x)[1], dim=1).mean(0))
        noise = torch.stack([normalize_image(noise_image(900 + s)) for s in range(8)])
        noise_mean = torch.nn.functional.normalize(model.forward_features(noise)[1], dim=1).mean(0)
        weight = torch.stack([m - noise_mean for m in means])
        weight = weight / weight.norm(dim=1, keepdim=True)
        # bias-free head: z is not normalised, so scale by the typical feature norm
        feature_norm = model.forward_features(noise)[1].norm(dim=1).mean()
        model.classifier.weight.copy_(weight[:, :, None, None] * scale / feature_norm)
    config = {"crop": SIZE}
    return save_checkpoint(path, model, list(class_names), config)


def cached_planted_checkpoint(tmp_path_factory, name: str = "planted.pt", **kwargs) -> Path:
    """``planted_checkpoint`` saved once per test session (the same weights for every module)."""
    folder = tmp_path_factory.getbasetemp() / "curate_checkpoints"
    path = folder / name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        planted_checkpoint(path, **kwargs)
    return path
