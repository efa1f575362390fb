"""Mining refuses a model that computes NaN or inf, with one line and no score rows."""

from __future__ import annotations

import pytest
import torch
from curate_fixtures import CLASS_NAMES, cached_planted_checkpoint, cue_image, save_image

from curate import store
from curate.ingest.pool_sources import iter_pool
from curate.ingest.register import ingest_pool
from curate.score.scoring import Scorer, score_pool
from wood_train.model.checkpoint import load_cam_net


def test_a_diverged_model_is_refused_before_any_score_is_written(tmp_path, tmp_path_factory):
    model, meta = load_cam_net(cached_planted_checkpoint(tmp_path_factory))
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")  # in memory: what a diverged run leaves
    scorer = Scorer(model, meta["weights_sha256"], meta["class_names"], 32, torch.device("cpu"))
    for k in range(len(CLASS_NAMES)):
        save_image(cue_image(k, 40 + k), tmp_path / "pool" / f"cue{k}.png")
    db = store.open_store(tmp_path / "c.db")
    with store.connect(db) as conn:
        store.ensure_classes(conn, CLASS_NAMES)
        run_id = store.start_run(conn, "mine", {})
        ingest_pool(conn, iter_pool(tmp_path / "pool"), fg_tags={}, run_id=run_id)
        with pytest.raises(ValueError) as info:
            score_pool(conn, scorer, run_id, batch_size=2, workers=0)
        assert conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0
    message = str(info.value)
    assert message.startswith(f"checkpoint {meta['weights_sha256'][:12]}: the model computes NaN")
    assert "\n" not in message and "--lr" in message
