"""Scoring: one forward per image, bad files as records, resumable per-batch writes, hardness."""

from __future__ import annotations

import math
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from curate_fixtures import (
    CLASS_NAMES,
    cached_planted_checkpoint,
    cue_image,
    noise_image,
    planted_checkpoint,
    save_image,
    write_awkward_files,
)
from PIL import Image

from curate import store
from curate.ingest.pool_sources import iter_pool
from curate.ingest.register import ingest_pool
from curate.neighbours.near_duplicates import CONFIRM_EMBEDDER, THUMB_EMBEDDER
from curate.score import scoring
from curate.score.pending import collate_scoring
from curate.score.scoring import (
    VOC_CLASSES,
    Scorer,
    classifier_embedder_name,
    hardness_from,
    rescore_hardness,
    resolve_image_size,
    score_pool,
)
from wood_train.data.transforms import normalize_image
from wood_train.model.checkpoint import load_cam_net


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return cached_planted_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def scorer(checkpoint):
    model, meta = load_cam_net(checkpoint)
    return Scorer(model, meta["weights_sha256"], meta["class_names"], 32, torch.device("cpu"))


def _planted_pool(folder):
    """Two cue images per class and two noise images; returns name -> planted top class or None.

    No clutter blocks: the CAM check below expects the band to be the only structure."""
    truth = {}
    for k in range(len(CLASS_NAMES)):
        for s in range(2):
            save_image(cue_image(k, 40 + 10 * k + s, clutter=False), folder / f"cue{k}_{s}.png")
            truth[f"cue{k}_{s}.png"] = k
    for s in range(2):
        save_image(noise_image(70 + s), folder / f"noise_{s}.png")
        truth[f"noise_{s}.png"] = None
    return truth


@pytest.fixture
def conn(tmp_path):
    with store.connect(store.open_store(tmp_path / "c.db")) as connection:
        yield connection


def _ingested(conn, folder):
    store.ensure_classes(conn, CLASS_NAMES)
    run_id = store.start_run(conn, "mine", {})
    ingest_pool(conn, iter_pool(folder), fg_tags={}, run_id=run_id)
    return run_id


def _score_rows(conn):
    rows = conn.execute(
        "SELECT p.relpath, s.* FROM scores s JOIN image_paths p USING (sha256) ORDER BY relpath"
    ).fetchall()
    return {r["relpath"]: dict(r) for r in rows}


def test_every_awkward_file_is_normalised_or_recorded_with_its_reason(tmp_path, conn, scorer):
    expected = write_awkward_files(tmp_path / "pool")
    run_id = _ingested(conn, tmp_path / "pool")
    report = score_pool(conn, scorer, run_id, batch_size=4, workers=0)
    rows = conn.execute(
        "SELECT p.relpath, i.status, i.bad_reason, i.width, i.height FROM images i "
        "JOIN image_paths p USING (sha256)"
    ).fetchall()
    got = {r["relpath"]: r["bad_reason"] if r["status"] == "bad" else None for r in rows}
    assert got == expected
    sizes = {r["relpath"]: (r["width"], r["height"]) for r in rows}
    assert sizes["exif_rotated.jpg"] == (32, 20)  # stored 20x32, EXIF says rotate 90 degrees
    assert sizes["animated.gif"] == sizes["deep16.png"] == (32, 32)
    usable = {name for name, reason in expected.items() if reason is None}
    assert set(_score_rows(conn)) == usable
    assert report.counts["scored"] == len(usable)
    assert report.counts["bad:truncated"] == report.counts["bad:too_large"] == 1
    per_embedder = dict(conn.execute("SELECT embedder, COUNT(*) FROM embeddings GROUP BY 1"))
    assert per_embedder == {
        scorer.classifier_embedder: len(usable),
        THUMB_EMBEDDER: len(usable),
        CONFIRM_EMBEDDER: len(usable),
    }


def test_scores_match_the_model_and_the_planted_answer(tmp_path, conn, scorer):
    truth = _planted_pool(tmp_path / "pool")
    run_id = _ingested(conn, tmp_path / "pool")
    score_pool(conn, scorer, run_id, batch_size=3, workers=0, heatmap_size=8)
    rows = _score_rows(conn)
    assert set(rows) == set(truth)
    for name, planted in truth.items():
        row = rows[name]
        probs = store.decode_probs(row["probs"])
        x = normalize_image(np.asarray(Image.open(tmp_path / "pool" / name)))
        with torch.no_grad():
            logits = scorer.model(x[None])[0]
        np.testing.assert_allclose(probs, torch.sigmoid(logits).numpy(), atol=1e-5)
        assert row["top_class"] == int(np.argmax(probs))
        assert row["top_score"] == pytest.approx(float(probs.max()), abs=1e-6)
        assert row["hardness_score"] == pytest.approx(row["top_score"])
        assert row["energy_score"] == pytest.approx(float(torch.logsumexp(logits, 0)), abs=1e-4)
        assert row["run_id"] == run_id and row["checkpoint_sha256"] == scorer.checkpoint_sha256
        if planted is not None:
            assert row["top_class"] == planted and row["top_score"] > 0.9
            heat = store.decode_heatmap(row["heatmap"], row["heatmap_size"])
            # the cue band covers the bottom half: the top class's CAM lives there
            assert heat[4:].mean() > heat[:4].mean() and heat.max() == 255
        else:
            assert row["top_score"] < 0.5


def test_rerun_skips_images_already_scored_by_the_same_checkpoint(
    tmp_path, conn, scorer, checkpoint
):
    _planted_pool(tmp_path / "pool")
    run_id = _ingested(conn, tmp_path / "pool")
    first = score_pool(conn, scorer, run_id, batch_size=4, workers=0)
    assert first.counts["scored"] == 8
    before = _score_rows(conn)
    second_run = store.start_run(conn, "mine", {})
    again = score_pool(conn, scorer, second_run, batch_size=4, workers=0)
    assert again.counts["scored"] == 0
    assert _score_rows(conn) == before  # same rows, still pointing at the first run
    save_image(noise_image(99), tmp_path / "pool" / "late.png")
    ingest_pool(conn, iter_pool(tmp_path / "pool"), fg_tags={}, run_id=second_run)
    late = score_pool(conn, scorer, second_run, batch_size=4, workers=0)
    assert late.counts["scored"] == 1
    assert _score_rows(conn)["late.png"]["run_id"] == second_run


def test_a_new_checkpoint_scores_everything_again_into_its_own_rows(tmp_path, conn, scorer):
    _planted_pool(tmp_path / "pool")
    run_id = _ingested(conn, tmp_path / "pool")
    score_pool(conn, scorer, run_id, batch_size=4, workers=0)
    other_path = tmp_path / "other.pt"
    planted_checkpoint(other_path, seed=1)
    model, meta = load_cam_net(other_path)
    other = Scorer(model, meta["weights_sha256"], CLASS_NAMES, 32, torch.device("cpu"))
    assert other.checkpoint_sha256 != scorer.checkpoint_sha256
    assert score_pool(conn, other, run_id, batch_size=4, workers=0).counts["scored"] == 8
    per_ck = conn.execute(
        "SELECT checkpoint_sha256, COUNT(*) FROM scores GROUP BY checkpoint_sha256"
    ).fetchall()
    embedders = {r[0] for r in conn.execute("SELECT DISTINCT embedder FROM embeddings")}
    assert sorted(n for _, n in per_ck) == [8, 8]
    assert embedders == {THUMB_EMBEDDER, CONFIRM_EMBEDDER} | {
        classifier_embedder_name(s.checkpoint_sha256) for s in (scorer, other)
    }


def test_workers_shard_the_pool_without_gaps_or_repeats(tmp_path, conn, scorer):
    truth = _planted_pool(tmp_path / "pool")
    run_id = _ingested(conn, tmp_path / "pool")
    report = score_pool(conn, scorer, run_id, batch_size=2, workers=2)
    assert report.counts["scored"] == len(truth)
    assert set(_score_rows(conn)) == set(truth)


def test_a_pass_stopped_mid_way_keeps_its_batches_stops_reading_and_resumes(
    tmp_path, conn, scorer, monkeypatch
):
    truth = _planted_pool(tmp_path / "pool")
    run_id = _ingested(conn, tmp_path / "pool")
    forwards = []

    def interrupted_on_the_third_batch(*args, **kwargs):
        forwards.append(1)
        if len(forwards) == 3:
            raise KeyboardInterrupt
        return real_score_loaded(*args, **kwargs)

    real_score_loaded = scoring.score_loaded
    monkeypatch.setattr(scoring, "score_loaded", interrupted_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        score_pool(conn, scorer, run_id, batch_size=2, workers=0)
    assert len(_score_rows(conn)) == 4  # the two batches before the interruption, committed
    # the thread that read ahead is gone, not left reading the pool
    deadline = time.monotonic() + 5
    while any(t.name == "prefetch" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "prefetch" for t in threading.enumerate())
    monkeypatch.setattr(scoring, "score_loaded", real_score_loaded)
    assert score_pool(conn, scorer, run_id, batch_size=2, workers=0).counts["scored"] == 4
    assert set(_score_rows(conn)) == set(truth)


def test_file_replaced_after_ingest_is_skipped_not_misattributed(tmp_path, conn, scorer):
    _planted_pool(tmp_path / "pool")
    run_id = _ingested(conn, tmp_path / "pool")
    shutil.copy(tmp_path / "pool" / "noise_0.png", tmp_path / "pool" / "cue0_0.png")
    report = score_pool(conn, scorer, run_id, batch_size=4, workers=0)
    assert report.counts["skipped:changed_on_disk"] == 1 and report.counts["scored"] == 7
    assert "cue0_0.png" not in _score_rows(conn)
    assert any("cue0_0.png" in p for p in report.problems)


def test_energy_hardness_formula_and_rescoring_without_a_forward(tmp_path, conn, scorer):
    energy = np.array([math.log(3) + 2.0, -5.0])
    expected = 1 / (1 + np.exp(-(energy - math.log(3))))
    np.testing.assert_allclose(hardness_from(np.array([0.9, 0.1]), energy, "energy", 3), expected)
    # equal logits L: energy = L + log C, so the energy hardness equals sigmoid(L) = top_score
    logit = 0.7
    equal = hardness_from(np.array([0.0]), np.array([logit + math.log(3)]), "energy", 3)
    assert equal[0] == pytest.approx(1 / (1 + math.exp(-logit)))
    with pytest.raises(ValueError, match="hardness must be"):
        hardness_from(np.zeros(1), np.zeros(1), "margin", 3)

    _planted_pool(tmp_path / "pool")
    run_id = _ingested(conn, tmp_path / "pool")
    score_pool(conn, scorer, run_id, hardness="energy", batch_size=4, workers=0)
    rows = _score_rows(conn)
    for row in rows.values():
        want = hardness_from(np.array([0]), np.array([row["energy_score"]]), "energy", 3)[0]
        assert row["hardness_score"] == pytest.approx(want)
    assert rescore_hardness(conn, scorer.checkpoint_sha256, "probability", 3) == len(rows)
    assert all(r["hardness_score"] == r["top_score"] for r in _score_rows(conn).values())
    assert rescore_hardness(conn, scorer.checkpoint_sha256, "probability", 3) == 0


def test_non_square_images_are_padded_and_the_heatmap_covers_the_image(tmp_path, conn, scorer):
    wide = np.concatenate([noise_image(1, 32), cue_image(0, 2, 32)], axis=1)  # 32 x 64
    save_image(wide, tmp_path / "pool" / "wide.png")
    run_id = _ingested(conn, tmp_path / "pool")
    score_pool(conn, scorer, run_id, batch_size=4, workers=0, heatmap_size=8)
    row = _score_rows(conn)["wide.png"]
    heat = store.decode_heatmap(row["heatmap"], 8)
    assert heat.max() == 255
    size = conn.execute("SELECT width, height FROM images").fetchone()
    assert tuple(size) == (64, 32)


def test_image_size_defaults():
    assert resolve_image_size(96, {"config": {"crop": 512}}) == 96
    assert resolve_image_size(None, {"config": {"crop": 64}}) == 64
    voc = list(VOC_CLASSES)
    assert resolve_image_size(None, {"config": {}, "class_names": voc}) == 448
    assert resolve_image_size(None, {"config": None, "class_names": ["a", "b"]}) == 64


def test_a_batch_is_normalised_once_as_each_image_would_be_on_its_own():
    """The collated batch holds exactly normalize_image of each image, pasted top-left into
    zeros (the mean colour), whatever the images' shapes and their order."""
    rng = np.random.default_rng(3)
    shapes = [(32, 32), (20, 32), (32, 7), (1, 32), (32, 32)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    items = [{"sha256": f"{k:064x}", "pixels": im, "side": 32, "valid": im.shape[:2],
              "size": im.shape[1::-1], "thumb": np.zeros(3), "confirm": np.zeros(3, np.uint8)}
             for k, im in enumerate(images)]  # fmt: skip
    items.insert(2, {"sha256": "bad", "bad": "truncated", "detail": "x.jpg: truncated"})
    batch = collate_scoring(items)
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (5, 3, 32, 32)
    for got, image in zip(batch["x"], images):
        want = torch.zeros(3, 32, 32)
        want[:, : image.shape[0], : image.shape[1]] = normalize_image(image)
        assert torch.equal(got, want)
    assert batch["bad"] == [("bad", "truncated", "x.jpg: truncated")]
    assert collate_scoring(items[2:3])["x"] is None
