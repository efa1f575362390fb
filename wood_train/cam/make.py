"""Class activation maps for a VOC split: multi-scale + flip inference (WOOD_SPEC section 4).

``make_cams(CamConfig(...))`` writes one file per image, ``<out_dir>/<id>.npy``, in IRN's layout,
which WSSS code already reads with ``np.load(path, allow_pickle=True).item()``::

    {"keys": int64 array (K,),               # 0-based foreground class indices in the image label
     "cam": float32 torch.Tensor (K, h, w),  # the same maps at stride 4: h = (H - 1) // 4 + 1
     "high_res": float32 array (K, H, W)}    # one map per key at image size, each max-normalised

Row ``k`` of ``high_res`` is the CAM of class ``keys[k]`` (mask value ``keys[k] + 1``): the sum over
scales and horizontal flips of ReLU(W_c . F) upsampled bilinearly to the image, divided by its
maximum + 1e-5, so values lie in [0, 1). ``cam`` is the same sum upsampled to IRN's strided size
instead; IRN's ``make_sem_seg_labels`` and ``make_ins_seg_labels`` read it and call ``.cuda()`` on
it, so it is a torch tensor as IRN writes it (loading a file therefore needs torch, as IRN's do).
``eval_cam`` and ``cam_to_ir_label`` read ``high_res``. Files are written only through ``save_cam`` (atomic), and
an existing file is never recomputed, so an interrupted run resumes where it stopped. The resolved
config goes to ``<out_dir>/config.yaml``; ``overlays=True`` adds ``<out_dir>/overlays/<id>.png``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from wood_train import config as cfg
from wood_train.cam.config import CAM_SCALES, CamConfig
from wood_train.data import voc
from wood_train.data.imageio import read_image
from wood_train.data.transforms import normalize_image
from wood_train.device import autocast, pin_memory, resolve_device
from wood_train.errors import ConfigError, DataError, MissingInputError, OutputExistsError
from wood_train.model.cam_net import CamNet
from wood_train.model.checkpoint import load_cam_net
from wood_train.model.finite import check_finite_outputs
from wood_train.progress import progress

NORM_EPS = 1e-5  # added to each map's maximum before dividing (IRN)
IRN_CAM_STRIDE = 4  # IRN's make_cam saves "cam" at 1/4 of the image: its random walk's resolution
CONFIG_NAME = "config.yaml"
OVERLAY_DIR = "overlays"


class CamInferenceDataset(Dataset):
    """Images of a split at several scales, each stacked with its horizontal flip.

    An item is a dict: ``id`` (str), ``images`` (list, one ``(2, 3, h_s, w_s)`` float tensor per
    scale: the image and its flip), ``size`` ((H, W) of the original), ``label`` ((C,) float).
    One image per item: sizes differ across images, so use ``DataLoader(batch_size=None)``.
    """

    def __init__(
        self,
        voc_root: str | Path,
        image_ids: Sequence[str],
        labels: np.ndarray,
        scales: Sequence[float] = CAM_SCALES,
    ):
        if len(image_ids) != len(labels):
            raise ValueError(f"{len(image_ids)} image ids but {len(labels)} labels")
        self.voc_root = Path(voc_root)
        self.image_ids = list(image_ids)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.scales = tuple(float(s) for s in scales)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.image_ids[index]
        image = read_image(voc.image_path(self.voc_root, image_id))
        height, width = image.shape[:2]
        images = []
        for scale in self.scales:
            scaled = image if scale == 1.0 else _rescale(image, scale)
            tensor = normalize_image(scaled)
            images.append(torch.stack([tensor, tensor.flip(-1)]))
        return {
            "id": image_id,
            "images": images,
            "size": (height, width),
            "label": torch.from_numpy(self.labels[index]),
        }


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


@torch.no_grad()
def compute_cam(
    model: CamNet,
    image_scales: Sequence[torch.Tensor],
    size: tuple[int, int],
    label: torch.Tensor | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-scale, flip-averaged CAMs of the classes in the image label.

    Parameters
    ----------
    model : CamNet
        The classifier, in eval mode; inputs are moved to its device.
    image_scales : sequence of torch.Tensor
        One ``(2, 3, h, w)`` tensor per scale: the normalised image and its horizontal flip
        (a ``(1, 3, h, w)`` tensor runs that scale without a flip).
    size : (int, int)
        Original image (H, W); every map is upsampled to it.
    label : (C,) array
        Multi-hot image label; only its classes are kept.

    Returns
    -------
    keys : (K,) int64 array
        0-based foreground class indices of the label.
    high_res : (K, H, W) float32 array
        Sum over scales and flips, each map divided by its maximum + 1e-5.

    Examples
    --------
    >>> keys, high_res = compute_cam(model, item["images"], item["size"], item["label"])
    """
    keys, (high_res,) = _summed_cams(model, image_scales, label, [size])
    return keys, high_res.cpu().numpy()


def strided_size(size: tuple[int, int], stride: int = IRN_CAM_STRIDE) -> tuple[int, int]:
    """IRN's ``get_strided_size``: ((H - 1) // stride + 1, (W - 1) // stride + 1)."""
    return (int(size[0]) - 1) // stride + 1, (int(size[1]) - 1) // stride + 1


@torch.no_grad()
def compute_irn_cams(
    model: CamNet,
    image_scales: Sequence[torch.Tensor],
    size: tuple[int, int],
    label: torch.Tensor | np.ndarray,
) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """``compute_cam`` plus the stride-4 maps IRN saves under ``cam``, from the same forwards.

    Returns ``keys`` (K,), ``cam`` ((K, h, w) float32 CPU tensor, h, w = ``strided_size(size)``)
    and ``high_res`` ((K, H, W) float32 array); each map is max-normalised on its own.
    """
    keys, (strided, high_res) = _summed_cams(model, image_scales, label, [strided_size(size), size])
    return keys, strided.cpu(), high_res.cpu().numpy()


def _summed_cams(
    model: CamNet,
    image_scales: Sequence[torch.Tensor],
    label: torch.Tensor | np.ndarray,
    sizes: Sequence[tuple[int, int]],
) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Label classes' CAMs summed over scales and flips at each of ``sizes``, max-normalised."""
    device = next(model.parameters()).device
    label = torch.as_tensor(np.asarray(label)).reshape(-1)
    keys = torch.nonzero(label > 0).flatten().to(device)
    sizes = [(int(h), int(w)) for h, w in sizes]
    totals = [torch.zeros((len(keys), h, w), dtype=torch.float32, device=device) for h, w in sizes]
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), totals
    for images in image_scales:
        cams = model.cam(images.to(device, non_blocking=True))[:, keys].float()
        if cams.shape[0] == 2:
            cams = cams[0:1] + cams[1:2].flip(-1)  # undo the flip, then add
        elif cams.shape[0] != 1:
            raise ValueError(
                f"expected an image and its flip per scale, got {cams.shape[0]} images"
            )
        for total, target in zip(totals, sizes):
            total += F.interpolate(cams, size=target, mode="bilinear", align_corners=False)[0]
    for total in totals:
        total /= total.amax(dim=(1, 2), keepdim=True) + NORM_EPS
    return keys.cpu().numpy().astype(np.int64), totals


def save_cam(
    path: str | Path,
    keys: np.ndarray,
    high_res: np.ndarray,
    cam: torch.Tensor | np.ndarray | None = None,
) -> Path:
    """Write one image's CAMs in IRN's ``.npy`` dict layout, atomically (temporary file + rename).

    ``cam`` (the stride-4 maps, see ``compute_irn_cams``) is stored as a float32 CPU tensor, as
    IRN's ``make_cam`` stores it; without it the file holds ``keys`` and ``high_res`` only.
    """
    path = Path(path)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    high_res = np.asarray(high_res, dtype=np.float32)
    _check_layout(path, keys, high_res)
    record = {"keys": keys, "high_res": high_res}
    if cam is not None:
        cam = torch.as_tensor(cam).detach().to("cpu", torch.float32).contiguous()
        expected = (len(keys), *strided_size(high_res.shape[1:]))
        if tuple(cam.shape) != expected:
            raise DataError(f"{path}: cam must have shape {expected}, got {tuple(cam.shape)}")
        record["cam"] = cam
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, record, allow_pickle=True)
    tmp.replace(path)
    return path


def load_cam(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``.npy`` CAM file (ours or IRN's); returns ``(keys int64 (K,), high_res (K, H, W))``."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"CAM file not found: {path}")
    try:
        data = np.load(path, allow_pickle=True).item()
    except Exception as exc:  # numpy raises several types for damaged or foreign files
        raise DataError(f"{path}: not a CAM file ({exc})") from None
    if not isinstance(data, dict) or "keys" not in data or "high_res" not in data:
        raise DataError(f"{path}: not a CAM file (expected a dict with 'keys' and 'high_res')")
    keys = np.asarray(data["keys"]).astype(np.int64).reshape(-1)  # IRN stores a torch tensor
    high_res = np.asarray(data["high_res"], dtype=np.float32)
    _check_layout(path, keys, high_res)
    return keys, high_res


def _check_layout(path: Path, keys: np.ndarray, high_res: np.ndarray) -> None:
    if high_res.ndim != 3 or high_res.shape[0] != len(keys):
        raise DataError(
            f"{path}: high_res must be (K, H, W) with K = len(keys) = {len(keys)}, "
            f"got shape {high_res.shape}"
        )


def cam_overlay(image: np.ndarray, high_res: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Image blended with a jet colour map of the strongest CAM at each pixel, (H, W, 3) uint8."""
    top = high_res.max(axis=0) if len(high_res) else np.zeros(image.shape[:2], np.float32)
    x = np.clip(top, 0.0, 1.0)[..., None]
    jet = np.clip(1.5 - np.abs(4.0 * x - np.array([3.0, 2.0, 1.0])), 0.0, 1.0) * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * jet
    return np.clip(blended, 0, 255).astype(np.uint8)


def _write_overlay(path: Path, image: np.ndarray, high_res: np.ndarray, alpha: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(cam_overlay(image, high_res, alpha)).save(tmp, format="PNG")
    tmp.replace(path)


def _validated(config: CamConfig) -> CamConfig:
    for name, flag in (
        ("checkpoint", "--checkpoint"),
        ("voc_root", "--voc-root"),
        ("out_dir", "--out"),
    ):
        if getattr(config, name) is None:
            raise ConfigError(f"CamConfig.{name} is not set (pass {flag})")
    if not config.scales or any(s <= 0 for s in config.scales):
        raise ConfigError(f"scales must be positive numbers, got {config.scales}")
    if not 0.0 <= config.overlay_alpha <= 1.0:
        raise ConfigError(f"overlay_alpha must be in [0, 1], got {config.overlay_alpha}")
    voc.check_voc_root(config.voc_root)
    return config


def make_cams(config: CamConfig) -> Path:
    """Write CAMs for every image of ``config.split`` to ``config.out_dir``; returns that folder.

    Images whose ``.npy`` already exists are skipped (and, with ``overlays``, only their missing
    overlays are drawn from the saved file), so re-running after an interruption is cheap. A
    summary (images, written, already present, seconds) is saved with the config in
    ``config.yaml``.
    """
    config = _validated(config)
    started = time.perf_counter()
    out_dir = Path(config.out_dir)
    device = resolve_device(config.device)
    model, meta = load_cam_net(config.checkpoint, device=device)
    class_names = voc.read_class_names(config.voc_root)
    if model.num_classes != len(class_names):
        raise DataError(
            f"{config.checkpoint}: the model has {model.num_classes} classes but {config.voc_root} "
            f"names {len(class_names)}"
        )
    if not (Path(config.voc_root) / voc.LABEL_FILE).is_file():  # labels come from the masks
        config = cfg.replace(config, masks=voc.resolve_masks(config.voc_root, config.masks))
    ids = voc.read_split(config.voc_root, config.split)
    _check_resumable(out_dir, meta["weights_sha256"], config.scales)
    todo = [i for i in ids if not (out_dir / f"{i}.npy").is_file()]
    labels = (
        voc.load_image_labels(config.voc_root, todo, model.num_classes, config.masks)
        if todo
        else []
    )
    # written first too, so an interrupted run's partial output already says what made it
    cfg.save_config(config, out_dir / CONFIG_NAME, checkpoint_sha256=meta["weights_sha256"])

    dataset = CamInferenceDataset(config.voc_root, todo, np.asarray(labels), config.scales)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=config.num_workers if todo else 0,
        pin_memory=pin_memory(device),
    )
    for n, item in enumerate(
        progress(loader, total=len(todo), desc=f"cam {config.split}", unit="img")
    ):
        with autocast(device, config.amp):
            keys, cam, high_res = compute_irn_cams(
                model, item["images"], item["size"], item["label"]
            )
        if n == 0:  # a diverged model: one clear line, no NaN CAMs on disk
            with torch.no_grad():
                logits = model(item["images"][0].to(device))
            check_finite_outputs({"logits": logits, "CAM": high_res}, str(config.checkpoint))
        save_cam(out_dir / f"{item['id']}.npy", keys, high_res, cam)
    if config.overlays:
        _write_missing_overlays(config, ids, out_dir)

    summary = {
        "n_images": len(ids),
        "written": len(todo),
        "already_present": len(ids) - len(todo),
        "seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
    }
    cfg.save_config(
        config, out_dir / CONFIG_NAME, checkpoint_sha256=meta["weights_sha256"], summary=summary
    )
    return out_dir


def _check_resumable(out_dir: Path, weights_sha256: str, scales: tuple[float, ...]) -> None:
    """Refuse to mix CAMs of two models (or two scale sets) in one folder."""
    path = out_dir / CONFIG_NAME
    if not path.is_file():
        return
    saved = yaml.safe_load(path.read_text()) or {}
    previous_sha = saved.get("checkpoint_sha256")
    previous_scales = tuple(float(s) for s in saved.get("config", {}).get("scales", scales))
    if previous_sha not in (None, weights_sha256) or previous_scales != tuple(scales):
        raise OutputExistsError(
            f"{out_dir} holds CAMs of another run (weights {str(previous_sha)[:12]}, scales "
            f"{previous_scales}); this one is weights {weights_sha256[:12]}, scales {tuple(scales)}. "
            "Use a new --out folder, or empty this one to recompute"
        )


def _write_missing_overlays(config: CamConfig, ids: list[str], out_dir: Path) -> None:
    missing = [i for i in ids if not (out_dir / OVERLAY_DIR / f"{i}.png").is_file()]
    for image_id in progress(missing, desc="overlays", unit="img"):
        image = read_image(voc.image_path(config.voc_root, image_id))
        _, high_res = load_cam(out_dir / f"{image_id}.npy")
        _write_overlay(
            out_dir / OVERLAY_DIR / f"{image_id}.png", image, high_res, config.overlay_alpha
        )
