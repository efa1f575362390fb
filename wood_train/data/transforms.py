"""Train and inference transforms in one place (the IRN recipe, WOOD_SPEC section 1).

Training: random resize of the long side to [lo, hi], horizontal flip, ImageNet normalisation,
random crop to ``crop`` with zero padding. Inference: normalisation only (scales are the CAM's job).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, ImageNet mean/std normalised."""
    arr = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def resize_long_side(image: np.ndarray | Image.Image, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 resized (bilinear) so that its long side is ``long_side``; a Pillow image
    is resized as it is (the same pixels, without a copy into a new image)."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    width, height = picture.size
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(picture.resize(size, Image.BILINEAR))


@dataclass(frozen=True)
class TrainTransform:
    """IRN-style augmentation; ``rng`` makes it reproducible per sample."""

    resize_long: tuple[int, int] = (320, 640)
    crop: int = 512
    hflip: bool = True

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        lo, hi = self.resize_long
        image = resize_long_side(image, int(rng.integers(lo, hi + 1)))
        if self.hflip and rng.random() < 0.5:
            image = image[:, ::-1]
        tensor = normalize_image(image)
        return random_crop(tensor, self.crop, rng)


def random_crop(tensor: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Crop (3, H, W) to (3, size, size), zero-padding where the image is smaller (IRN's random_crop)."""
    _, height, width = tensor.shape
    out = torch.zeros((tensor.shape[0], size, size), dtype=tensor.dtype)
    crop_h, crop_w = min(size, height), min(size, width)
    src_y = int(rng.integers(0, height - crop_h + 1))
    src_x = int(rng.integers(0, width - crop_w + 1))
    dst_y = int(rng.integers(0, size - crop_h + 1))
    dst_x = int(rng.integers(0, size - crop_w + 1))
    out[:, dst_y : dst_y + crop_h, dst_x : dst_x + crop_w] = tensor[
        :, src_y : src_y + crop_h, src_x : src_x + crop_w
    ]
    return out
