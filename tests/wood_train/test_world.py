"""The spurious-cue world: layout, determinism, cue/object consistency, pool truth, reuse, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import parse_args
from wood_train import config as cfg
from wood_train.config import load_yaml, replace
from wood_train.data import voc
from wood_train.data.imageio import read_image, read_label_png
from wood_train.errors import OutputExistsError
from wood_train.world.config import POOL_KINDS, WORLD_PRESETS, WorldConfig, world_paths
from wood_train.world.generate import generate_world, read_world_info
from wood_train.world.properties import auroc, meets, pool_mix, ranking_properties
from wood_train.world.scenes import render_sample
from wood_train.world.truth import read_pool_truth

TINY = WORLD_PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    return generate_world(TINY, tmp_path_factory.mktemp("world") / "tiny").root


def _files(root: Path) -> dict[str, bytes]:
    """Every file's bytes except world.yaml, whose provenance holds a timestamp."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "world.yaml"
    }


def _masks(voc_root: Path, split: str):
    ids = voc.read_split(voc_root, split)
    seg = np.stack([read_label_png(voc.mask_path(voc_root, i)) for i in ids])
    cue = np.stack([read_label_png(voc_root / "CueMasks" / f"{i}.png") for i in ids])
    return ids, seg, cue


def test_same_seed_gives_identical_bytes_other_seed_differs(tiny_world, tmp_path):
    again = generate_world(TINY, tmp_path / "again").root
    assert _files(again) == _files(tiny_world)
    other = _files(generate_world(replace(TINY, seed=1), tmp_path / "other").root)
    ours = _files(tiny_world)
    jpegs = [name for name in ours if name.startswith("VOC2012/JPEGImages/")]
    assert jpegs and all(other[name] != ours[name] for name in jpegs)


def test_layout_is_readable_by_voc_and_labels_match_masks(tiny_world):
    voc_root = world_paths(tiny_world).voc_root
    assert voc.read_class_names(voc_root) == ["train", "boat", "aeroplane", "sheep"]
    assert (voc_root / "cue_names.txt").read_text().split() == ["rails", "water", "sky", "grass"]
    train, val = voc.read_split(voc_root, "train"), voc.read_split(voc_root, "val")
    assert (len(train), len(val)) == (TINY.n_train, TINY.n_val)
    assert not set(train) & set(val)
    for ids in (train, val):
        from_npy = voc.load_image_labels(voc_root, ids, 4)
        from_masks = np.stack(
            [voc.labels_from_mask(read_label_png(voc.mask_path(voc_root, i)), 4) for i in ids]
        )
        np.testing.assert_array_equal(from_npy, from_masks)
        assert read_image(voc.image_path(voc_root, ids[0])).shape == (32, 32, 3)


def test_cue_never_without_object_and_never_on_object(tiny_world):
    voc_root = world_paths(tiny_world).voc_root
    for split in ("train", "val"):
        _, seg, cue = _masks(voc_root, split)
        assert set(np.unique(seg)) <= {0, 1, 2, 3, 4, 255}
        assert not ((cue > 0) & (seg > 0)).any()  # object and ignore-band pixels are never cue
        for s, c in zip(seg, cue):
            objects = set(np.unique(s)) - {0, 255}
            assert set(np.unique(c)) - {0} <= objects
            # VOC-style edge: every object has an ignore band and keeps an interior
            assert (s == 255).any() == bool(objects) and all((s == k).any() for k in objects)


def test_background_only_scenes_hold_no_class_no_cue_and_are_a_minority():
    config = replace(WORLD_PRESETS["default"], seed=5)
    scenes = [render_sample(config, "train", i) for i in range(300)]
    empty = [s for s in scenes if not s.objects]
    assert 0.08 <= len(empty) / len(scenes) <= 0.22  # p_background 0.15
    assert all(not s.cues and not s.cue_mask.any() and not s.class_mask.any() for s in empty)
    none = replace(config, p_background=0.0)
    assert all(render_sample(none, "train", i).objects for i in range(100))


def test_p_cue_edge_cases():
    always = replace(TINY, p_cue=1.0, p_background=0.0)
    never = replace(TINY, p_cue=0.0, p_background=0.0)
    for index in range(TINY.n_train):
        with_cue, without = (
            render_sample(always, "train", index),
            render_sample(never, "train", index),
        )
        assert with_cue.cues == with_cue.objects and len(with_cue.objects) >= 1
        assert all((with_cue.cue_mask == k + 1).sum() > 0.1 * 32 * 32 / 2 for k in with_cue.cues)
        assert without.cues == () and not without.cue_mask.any() and without.objects


def test_cues_cover_a_large_area_and_objects_are_sizeable():
    config = replace(TINY, p_cue=1.0, p_two_objects=0.0, p_background=0.0)
    for index in range(12):
        scene = render_sample(config, "train", index)
        cue_area = (scene.cue_mask > 0).mean() + (scene.class_mask > 0).mean()
        assert 0.2 < cue_area < 0.7  # the band (30-50%) includes the object standing on it
        assert (scene.class_mask > 0).mean() > 0.03


def test_pool_truth_counts_and_contamination_fraction(tiny_world):
    truth = read_pool_truth(tiny_world)
    pool_dir = world_paths(tiny_world).pool_dir
    assert sorted(p.name for p in pool_dir.iterdir()) == sorted(truth["file"])
    assert len(truth) == TINY.n_pool_originals + TINY.n_pool_duplicates == 40
    originals = truth[truth["duplicate_of"] == ""]
    counts = originals["kind"].value_counts().to_dict()
    assert counts == {"hard_ood": 12, "easy_ood": 16, "contaminated": 6}
    assert set(truth["kind"]) <= set(POOL_KINDS)
    fraction = (truth["kind"] == "contaminated").mean()
    assert 0.1 <= fraction <= 0.3
    assert (
        read_world_info(tiny_world)["counts"]["pool_kinds"]
        == truth["kind"].value_counts().to_dict()
    )
    hard = originals[originals["kind"] == "hard_ood"]
    assert (hard["objects"] == "").all() and (hard["cues"] != "").all()
    easy = originals[originals["kind"] == "easy_ood"]
    assert (easy["objects"] == "").all() and (easy["cues"] == "").all()
    contaminated = originals[originals["kind"] == "contaminated"]
    assert (contaminated["objects"] != "").all()
    assert all(
        name.startswith("p_") and len(name) == len("p_3fa9c2d1.jpg") for name in truth["file"]
    )


def test_hard_oods_have_cue_pixels_no_object_and_cues_of_every_size():
    areas = []
    for index in range(40):
        scene = render_sample(TINY, "hard_ood", index)
        assert scene.objects == () and not scene.class_mask.any()
        assert scene.cues and (scene.cue_mask > 0).mean() > 0.05
        areas.append((scene.cue_mask > 0).mean())
    assert min(areas) < 0.2 and max(areas) > 0.4  # from a strip of rails to a whole field
    easy = render_sample(TINY, "easy_ood", 0)
    assert not easy.cue_mask.any() and not easy.class_mask.any()


def _thumb(path: Path, size: int = 16) -> np.ndarray:
    """Resized to a common small size, so crops and resizes compare pixel by pixel."""
    image = Image.fromarray(read_image(path)).resize((size, size), Image.BILINEAR)
    return np.asarray(image, np.float32).ravel()


def test_duplicates_point_to_visually_close_originals(tiny_world):
    truth = read_pool_truth(tiny_world).set_index("file")
    pool_dir = world_paths(tiny_world).pool_dir
    duplicates = truth[truth["duplicate_of"] != ""]
    assert len(duplicates) == TINY.n_pool_duplicates
    originals = truth[truth["duplicate_of"] == ""].index.tolist()
    thumbs = np.stack([_thumb(pool_dir / name) for name in originals])
    for name, row in duplicates.iterrows():
        source = truth.loc[row["duplicate_of"]]
        assert source["duplicate_of"] == ""
        assert (row["kind"], row["cues"], row["objects"]) == tuple(
            source[["kind", "cues", "objects"]]
        )
        assert row["transform"].split()[0] in ("jpeg", "resize", "crop")
        gaps = np.abs(thumbs - _thumb(pool_dir / name)).mean(axis=1)
        mine = originals.index(row["duplicate_of"])
        assert gaps.argmin() == mine, (name, row["transform"])
        assert gaps[mine] < 0.5 * np.median(np.delete(gaps, mine)), (name, row["transform"])


def test_rerun_reuses_mismatch_raises_force_replaces(tiny_world, tmp_path):
    out = tmp_path / "w"
    generate_world(TINY, out)
    marker = world_paths(out).truth_csv.stat().st_mtime_ns
    assert generate_world(TINY, out).root == out
    assert world_paths(out).truth_csv.stat().st_mtime_ns == marker  # reused, not rewritten
    assert load_yaml(WorldConfig, out / "world.yaml") == TINY  # the folder alone rebuilds it
    seven = replace(TINY, seed=7)
    with pytest.raises(OutputExistsError, match=str(out)):
        generate_world(seven, out)
    generate_world(seven, out, force=True)
    assert read_world_info(out)["config"]["seed"] == 7
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds no world"):
        generate_world(TINY, foreign, force=True)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="num_classes"):
        WorldConfig(num_classes=9)
    with pytest.raises(ValueError, match="p_cue"):
        replace(TINY, p_cue=1.5)


def test_six_classes_and_one_class_worlds_render():
    six = replace(TINY, num_classes=6, p_two_objects=0.5, p_cue=1.0)
    seen = set()
    for index in range(40):
        scene = render_sample(six, "train", index)
        seen |= set(scene.objects)
        assert set(np.unique(scene.cue_mask)) - {0} == {k + 1 for k in scene.cues}
    assert seen == set(range(6))
    one = replace(TINY, num_classes=1, p_two_objects=1.0, p_background=0.0)
    assert all(render_sample(one, "train", i).objects == (0,) for i in range(5))


def test_cli_parses_preset_and_overrides(tmp_path, capsys):
    args = parse_args(
        ["world", "--out", str(tmp_path / "w"), "--preset", "tiny", "--n-train", "10",
         "--object-size", "0.4", "0.45", "--seed", "3"]
    )  # fmt: skip
    config = cfg.config_from_args(args, WorldConfig, WORLD_PRESETS)
    assert (config.n_train, config.seed, config.object_size) == (10, 3, (0.4, 0.45))
    assert (config.n_val, config.image_size) == (TINY.n_val, TINY.image_size)
    assert args.func(args) == 0
    assert "train 10, val 12" in capsys.readouterr().out
    assert len(voc.read_split(tmp_path / "w" / "VOC2012", "train")) == 10
    args.force = False
    assert args.func(args) == 0 and "reused" in capsys.readouterr().out


@pytest.mark.parametrize("seed", [11, 12])
def test_default_pool_mix_holds_on_other_seeds(seed, tmp_path):
    """The default pool's mix, checked on generated files (no training needed): hard OoDs a
    minority, contamination 15-25%, easy OoDs the rest, near-duplicates close to their source."""
    config = replace(WORLD_PRESETS["default"], seed=seed, n_train=30, n_val=10)
    root = generate_world(config, tmp_path / "w").root
    truth = read_pool_truth(root)
    mix = pool_mix(truth)
    assert mix["hard_share"] <= 0.15 and 0.15 <= mix["contaminated_share"] <= 0.25
    assert mix["easy_share"] >= 0.5
    assert abs(mix["duplicate_share"] - config.n_pool_duplicates / len(truth)) < 1e-9
    pool_dir = world_paths(root).pool_dir
    originals = truth[truth["duplicate_of"] == ""]
    for kind, has_cue, has_object in (
        ("hard_ood", True, False),
        ("easy_ood", False, False),
        ("contaminated", None, True),
    ):
        rows = originals[originals["kind"] == kind]
        assert (rows["objects"] != "").all() == has_object and (
            rows["objects"] != ""
        ).any() == has_object
        if has_cue is not None:
            assert (rows["cues"] != "").all() == has_cue
    # every class has hard OoDs (its cue alone) and contaminated images, so none is left out
    for name in config.class_names:
        assert originals[originals.kind == "hard_ood"].cues.str.contains(name).any()
        assert originals[originals.kind == "contaminated"].objects.str.contains(name).any()
    duplicates = truth[truth["duplicate_of"] != ""].head(20)
    for name, source in zip(duplicates["file"], duplicates["duplicate_of"]):
        gap = np.abs(_thumb(pool_dir / name) - _thumb(pool_dir / source)).mean()
        assert gap < 12.0, (name, source, gap)  # 0-255 scale: a re-encode, resize or crop


def test_contaminated_objects_are_smaller_than_training_objects():
    config = replace(WORLD_PRESETS["default"], seed=3, p_two_objects=0.0, p_background=0.0)
    area = {
        stream: np.mean(
            [(render_sample(config, stream, i).class_mask > 0).mean() for i in range(60)]
        )
        for stream in ("train", "contaminated")
    }
    assert area["contaminated"] < 0.7 * area["train"]


def test_auroc_counts_ties_half_and_matches_a_pairwise_count():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 10, 40) / 10, rng.integers(0, 10, 50) / 10
    pairwise = ((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean()
    assert auroc(pos, neg) == pytest.approx(pairwise)


def test_ranking_properties_find_a_default_class():
    names = ["train", "boat", "aeroplane"]
    kinds = np.array(["hard_ood"] * 2 + ["easy_ood"] * 5 + ["contaminated"])
    probs = np.array(
        [[0.95, 0.1, 0.1], [0.1, 0.9, 0.2]]  # hard: cue classes
        + [[0.1, 0.1, 0.3]] * 4
        + [[0.2, 0.1, 0.1]]  # easy: four of five vote aeroplane
        + [[0.99, 0.1, 0.1]]
    )
    found = ranking_properties(probs, kinds, names)
    assert found["hardness_auroc"] == 1.0
    assert found["easy_median_top_prob"] == pytest.approx(0.3)
    assert found["easy_top_vote_share"] == pytest.approx(0.8)
    assert found["easy_top_vote_class"] == "aeroplane"
    assert not meets("easy_top_vote_share", found["easy_top_vote_share"])
    assert meets("contaminated_share", 0.2) and not meets("contaminated_share", 0.26)
