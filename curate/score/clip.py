"""Image embeddings from an OpenCLIP model read from a local file, and zero-shot foreground checks.

CLIP weights are never downloaded: ``OpenClipEmbedder`` takes an architecture name known to
open_clip (built in, or registered with ``open_clip.add_model_config``) and the path of a
checkpoint on disk.

The zero-shot check asks CLIP whether any foreground class is in a picture: each class and a
"background" concept are described by a prompt ensemble (Radford et al. 2021, sec. 3.1.4: the
mean of the normalised text embeddings of several templates), the image is compared with every
description, a softmax over ``logit_scale * cosine`` gives probabilities, and the foreground
probability is the mass on the classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wood_train.errors import ConfigError, MissingInputError
from wood_train.progress import progress

PROMPT_TEMPLATES = (
    "a photo of a {c}.",
    "a blurry photo of a {c}.",
    "a photo of the {c}.",
    "a close-up photo of a {c}.",
    "a photo of a small {c}.",
    "a photo of a large {c}.",
    "a cropped photo of a {c}.",
    "a low resolution photo of a {c}.",
)
BACKGROUND_PROMPTS = (
    "a photo of an empty scene.",
    "a photo of a landscape with no objects.",
    "a photo of a background.",
    "a photo of a texture.",
    "a blurry photo of an empty scene.",
)
EMBED_BATCH = 64


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32; all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


class OpenClipEmbedder:
    """An OpenCLIP model loaded from a local checkpoint, for image embeddings and zero-shot checks.

    Parameters
    ----------
    model_name
        An open_clip architecture (``"ViT-B-32"``, or a config added with
        ``open_clip.add_model_config``).
    checkpoint_path
        The model's weights on disk (a state dict, as open_clip saves them).
    device
        Where the model runs.

    Examples
    --------
    >>> clip = OpenClipEmbedder("ViT-B-32", "weights/vit_b_32_openai.pt")
    >>> z = clip.embed([read_image(p) for p in paths])
    >>> p_fg = clip.foreground_probability(z, ["train", "boat"])
    """

    def __init__(self, model_name: str, checkpoint_path: str | Path, device: str = "cpu"):
        import open_clip  # imported here: slow to import, and only this class needs it

        if ":" in model_name:
            raise ConfigError(
                f"CLIP model {model_name!r}: give an open_clip architecture name and a local "
                "checkpoint file; hub and folder schemas would download or bypass the file"
            )
        path = Path(checkpoint_path)
        if not path.is_file():
            raise MissingInputError(
                f"CLIP checkpoint not found: {path} (weights are never downloaded; put the "
                f"{model_name} state dict there)"
            )
        config = open_clip.get_model_config(model_name)
        if config is None:
            raise ConfigError(
                f"unknown CLIP architecture {model_name!r}; known: {', '.join(open_clip.list_models())}"
            )
        if "hf_tokenizer_name" in config.get("text_cfg", {}):
            raise ConfigError(
                f"CLIP architecture {model_name!r} needs a Hugging Face tokenizer download; "
                "use an architecture with open_clip's built-in tokenizer"
            )
        self.model_name = model_name
        self.device = torch.device(device)
        model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=str(path), device=self.device
        )
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def name(self) -> str:
        """Embedder name for the store (``clip_<architecture>``)."""
        return "clip_" + "".join(
            ch if ch.isalnum() or ch in "-_." else "_" for ch in self.model_name
        )

    @property
    def dim(self) -> int:
        """Embedding dimension (shared by the image and text towers)."""
        return int(self.text_embeddings(("a photo.",)).shape[1])

    @torch.inference_mode()
    def embed(self, images: Sequence[np.ndarray], batch_size: int = EMBED_BATCH) -> np.ndarray:
        """(B, D) unit-norm float32 embeddings of (H, W, 3) uint8 RGB images."""
        out = []
        starts = range(0, len(images), batch_size)
        for start in progress(starts, desc="CLIP embeddings", unit="batch", leave=False):
            batch = torch.stack(
                [
                    self.preprocess(Image.fromarray(np.asarray(im)))
                    for im in images[start : start + batch_size]
                ]
            ).to(self.device)
            out.append(self.model.encode_image(batch, normalize=True).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out)

    @torch.inference_mode()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """(P, D) unit-norm text embeddings, cached per prompt list."""
        key = tuple(prompts)
        if key not in self._text_cache:
            tokens = self.tokenizer(list(prompts)).to(self.device)
            self._text_cache[key] = self.model.encode_text(tokens, normalize=True).float()
        return self._text_cache[key]

    def concept_embedding(self, prompts: Sequence[str]) -> torch.Tensor:
        """The ensemble embedding of one concept: mean of its prompts' embeddings, renormalised."""
        mean = self.text_embeddings(prompts).mean(dim=0)
        return mean / mean.norm().clamp_min(1e-12)

    @torch.inference_mode()
    def zero_shot_probs(
        self,
        image_embeddings: np.ndarray,
        class_names: Sequence[str],
        prompts: Sequence[str] = PROMPT_TEMPLATES,
        background_prompts: Sequence[str] = BACKGROUND_PROMPTS,
    ) -> np.ndarray:
        """(B, C + 1) probabilities over the classes then background (rows sum to 1)."""
        if not class_names:
            raise ConfigError("zero-shot check needs at least one class name")
        if any("{c}" not in p for p in prompts):
            raise ConfigError(f"every prompt template must contain '{{c}}', got {list(prompts)}")
        concepts = [
            self.concept_embedding([p.format(c=name.replace("_", " ")) for p in prompts])
            for name in class_names
        ]
        concepts.append(self.concept_embedding(background_prompts))
        text = torch.stack(concepts)
        images = torch.as_tensor(l2_normalize(image_embeddings), device=self.device)
        logits = self.model.logit_scale.exp().float() * images @ text.T
        return logits.softmax(dim=-1).cpu().numpy()

    def foreground_probability(
        self,
        image_embeddings: np.ndarray,
        class_names: Sequence[str],
        prompts: Sequence[str] = PROMPT_TEMPLATES,
        background_prompts: Sequence[str] = BACKGROUND_PROMPTS,
    ) -> np.ndarray:
        """(B,) probability that some foreground class is in each image (the ``clip_fg_score``)."""
        probs = self.zero_shot_probs(image_embeddings, class_names, prompts, background_prompts)
        return probs[:, : len(class_names)].sum(axis=1)
