import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from curate.score.clip import BACKGROUND_PROMPTS, OpenClipEmbedder, l2_normalize

TINY = "hardood-test-tiny-vit"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny ViT CLIP registered with open_clip, random weights saved as a local checkpoint."""
    folder = tmp_path_factory.mktemp("clip")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY).eval()
    checkpoint = folder / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return model, checkpoint


@pytest.fixture(scope="module")
def embedder(tiny_clip):
    return OpenClipEmbedder(TINY, tiny_clip[1])


def _images():
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8),
        rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8),  # resized and cropped to 32
        np.zeros((32, 32, 3), np.uint8),
    ]


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_embeddings_equal_a_direct_forward_of_the_saved_model(tiny_clip, embedder):
    model, _ = tiny_clip
    _, _, preprocess = open_clip.create_model_and_transforms(TINY)
    images = _images()
    with torch.no_grad():
        batch = torch.stack([preprocess(Image.fromarray(im)) for im in images])
        direct = model.encode_image(batch)
        direct = (direct / direct.norm(dim=-1, keepdim=True)).numpy()
    got = embedder.embed(images, batch_size=2)
    assert got.shape == (3, 32) and got.dtype == np.float32
    assert embedder.dim == 32 and embedder.embed([]).shape == (0, 32)
    np.testing.assert_allclose(got, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    torch.manual_seed(1)
    other = open_clip.create_model(TINY).eval()
    with torch.no_grad():
        unloaded = l2_normalize(other.encode_image(batch).numpy())
    assert not np.allclose(got, unloaded, atol=1e-3)  # the weights came from the file


def _concept(model, tokenizer, prompts):
    with torch.no_grad():
        text = model.encode_text(tokenizer(list(prompts)))
    text = text / text.norm(dim=-1, keepdim=True)
    mean = text.mean(dim=0)
    return mean / mean.norm()


def test_foreground_probability_matches_a_direct_zero_shot_computation(tiny_clip, embedder):
    model, _ = tiny_clip
    tokenizer = open_clip.get_tokenizer(TINY)
    prompts = ("a photo of a {c}.", "a blurry photo of a {c}.")
    classes = ["train", "boat"]
    images = embedder.embed(_images())
    text = torch.stack(
        [_concept(model, tokenizer, [p.format(c=c) for p in prompts]) for c in classes]
        + [_concept(model, tokenizer, BACKGROUND_PROMPTS)]
    )
    with torch.no_grad():
        probs = (model.logit_scale.exp() * torch.from_numpy(images) @ text.T).softmax(-1).numpy()
    got = embedder.foreground_probability(images, classes, prompts=prompts)
    assert got.shape == (3,) and np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, probs[:, :2].sum(1), atol=1e-5)
    per_class = embedder.zero_shot_probs(images, classes, prompts=prompts)
    np.testing.assert_allclose(per_class, probs, atol=1e-5)


def test_an_image_that_looks_like_the_class_text_is_foreground(embedder):
    # planted: image embeddings equal to the text side's own concepts. With one class, the class
    # concept scores cos 1 with itself and < 1 with background, so it must be > 0.5, and vice versa
    class_concept = embedder.concept_embedding(
        [p.format(c="train") for p in ("a photo of a {c}.", "a photo of the {c}.")]
    )
    background = embedder.concept_embedding(BACKGROUND_PROMPTS)
    planted = torch.stack([class_concept, background]).numpy()
    fg = embedder.foreground_probability(
        planted, ["train"], prompts=("a photo of a {c}.", "a photo of the {c}.")
    )
    assert fg[0] > 0.5 > fg[1]


def test_missing_weights_and_unknown_models_are_clear_errors(tmp_path, tiny_clip):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        OpenClipEmbedder(TINY, tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="unknown CLIP architecture 'no-such-net'"):
        OpenClipEmbedder("no-such-net", tiny_clip[1])
    with pytest.raises(ValueError, match="local checkpoint"):
        OpenClipEmbedder("hf-hub:someone/clip", tiny_clip[1])


def test_prompt_templates_must_name_the_class(embedder):
    with pytest.raises(ValueError, match="{c}"):
        embedder.foreground_probability(np.ones((1, 32)), ["train"], prompts=("a photo.",))
