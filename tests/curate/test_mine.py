"""`hardood mine` end to end: summaries, runs, re-runs, resume after SIGKILL, CLI options."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from curate_fixtures import (
    CLASS_NAMES,
    cached_planted_checkpoint,
    cue_image,
    noise_image,
    planted_checkpoint,
    save_image,
    write_awkward_files,
)

from app.cli import main, parse_args
from curate import mine as mine_module
from curate import store
from curate.mine import mine
from curate.mine_config import PRESETS, MineConfig
from curate.neighbours.near_duplicates import CONFIRM_EMBEDDER, THUMB_EMBEDDER
from curate.queue.build import queue_frame
from curate.score.scoring import classifier_embedder_name
from wood_train import config as cfg
from wood_train.config import replace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return cached_planted_checkpoint(tmp_path_factory)


def _pool(folder: Path, per_class: int = 2, noise: int = 2) -> Path:
    for k in range(len(CLASS_NAMES)):
        for s in range(per_class):
            save_image(cue_image(k, 1000 + 50 * k + s), folder / f"cue{k}_{s}.png")
    for s in range(noise):
        save_image(noise_image(2000 + s), folder / f"noise_{s}.png")
    return folder


def _config(tmp_path, checkpoint, *pool, **changes):
    base = MineConfig(
        db=tmp_path / "c.db", checkpoint=checkpoint, pool=tuple(str(p) for p in pool),
        batch_size=4, workers=0, dup_threshold=0.9999, clusters_per_class=2,
    )  # fmt: skip
    return replace(base, **changes)


def _counts(db, sql):
    with store.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def _queue(db):
    with store.connect(db) as conn:
        return queue_frame(conn)


def _vectors(db, embedder, dim, shas):
    from curate.neighbours.vector_index import EmbeddingFile

    with store.connect(db) as conn:
        return EmbeddingFile(conn, embedder, dim).load(shas)


def test_mine_end_to_end_reports_each_step_and_every_bad_reason(tmp_path, checkpoint):
    pool = _pool(tmp_path / "pool")
    write_awkward_files(pool / "odd")
    lines: list[str] = []
    result = mine(_config(tmp_path, checkpoint, pool), log=lines.append)
    steps = [line for line in lines if not line.startswith(" ")]
    assert steps[0].startswith("ingest: 17 files listed, 17 new images")
    assert steps[1].startswith("score: 13 images scored, 3 could not be decoded")
    assert steps[2].startswith("dedup: ") and steps[3].startswith("queue: 6 images ranked")
    assert steps[4] == "bad images: empty_file 1, not_an_image 1, too_large 1, truncated 1"
    details = [line for line in lines if line.startswith(" ")]
    assert len(details) == 3 and any(
        "bomb.png: cannot decode image (too_large)" in d for d in details
    )
    assert result.bad_reasons == {
        "empty_file": 1,
        "not_an_image": 1,
        "too_large": 1,
        "truncated": 1,
    }
    with store.connect(result.db) as conn:
        run = dict(conn.execute("SELECT * FROM runs").fetchone())
    assert run["status"] == "done" and run["command"] == "mine" and run["ended_at"]
    assert run["checkpoint_sha256"] == _ck_sha(checkpoint)
    resolved = json.loads(run["config_json"])
    assert resolved["image_size"] == 32  # from the checkpoint's training crop
    assert resolved["workers"] == 0 and resolved["pool"] == [str(pool)]
    counts = json.loads(run["counts_json"])
    assert counts["score_scored"] == 13 and counts["queue"] == 6
    frame = _queue(result.db)
    assert len(frame) == 6 and set(frame["top_class"]) == set(CLASS_NAMES)
    assert all(Path(p).name.startswith("cue") for p in frame["path"])
    assert _counts(result.db, "SELECT COUNT(*) FROM scores WHERE run_id = 1") == 13


def _ck_sha(path):
    from wood_train.model.checkpoint import read_checkpoint

    return read_checkpoint(path)["weights_sha256"]


def test_rerun_is_cheap_and_new_files_are_added(tmp_path, checkpoint):
    pool = _pool(tmp_path / "pool")
    config = _config(tmp_path, checkpoint, pool)
    mine(config, log=lambda _: None)
    lines: list[str] = []
    mine(config, log=lines.append)
    assert "8 unchanged" in lines[0] and lines[1].startswith("score: 0 images scored")
    save_image(cue_image(2, 7777), pool / "late.png")
    lines.clear()
    result = mine(config, log=lines.append)
    assert "1 new images" in lines[0] and lines[1].startswith("score: 1 images scored")
    with store.connect(result.db) as conn:
        runs = conn.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
        per_run = dict(conn.execute("SELECT run_id, COUNT(*) FROM scores GROUP BY run_id"))
    assert [tuple(r) for r in runs] == [(1, "done"), (2, "done"), (3, "done")]
    assert per_run == {1: 8, 3: 1}
    assert len(result.queue) == 7


def test_a_checkpoint_with_other_classes_is_refused(tmp_path, checkpoint):
    pool = _pool(tmp_path / "pool", per_class=1, noise=0)
    mine(_config(tmp_path, checkpoint, pool), log=lambda _: None)
    other = tmp_path / "other.pt"
    planted_checkpoint(other, class_names=["train", "boat", "sheep"])
    with pytest.raises(ValueError, match="other.pt has classes.*'sheep'.*mined with"):
        mine(_config(tmp_path, other, pool), log=lambda _: None)


def test_tags_exclude_foreground_images_before_scoring(tmp_path, checkpoint):
    _pool(tmp_path / "pool", per_class=1, noise=1)
    sheet = tmp_path / "pool.csv"
    sheet.write_text(
        "path,tags\npool/cue0_0.png,Rail;Train\npool/cue1_0.png,Water\n"
        "pool/cue2_0.png,Sky\npool/noise_0.png,Wall\n"
    )
    lines: list[str] = []
    result = mine(_config(tmp_path, checkpoint, sheet), log=lines.append)
    assert "1 tag-excluded" in lines[0]
    assert result.bad_reasons == {"tag_excluded": 1}
    assert not any(p.endswith("cue0_0.png") for p in _queue(result.db)["path"])
    assert _counts(result.db, "SELECT COUNT(*) FROM scores") == 3


@pytest.mark.parametrize("error, status", [(KeyboardInterrupt, "interrupted"), (OSError, "failed")])
def test_a_run_that_stops_early_is_recorded_with_its_status(
    tmp_path, checkpoint, monkeypatch, error, status
):
    pool = _pool(tmp_path / "pool", per_class=1, noise=0)

    def stop(*args, **kwargs):
        raise error("disk full" if error is OSError else "")

    monkeypatch.setattr(mine_module, "build_queue", stop)
    with pytest.raises(error):
        mine(_config(tmp_path, checkpoint, pool), log=lambda _: None)
    with store.connect(tmp_path / "c.db") as conn:
        run = conn.execute("SELECT status, ended_at, counts_json FROM runs").fetchone()
        n_scores = conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    assert run["status"] == status and run["ended_at"]
    assert json.loads(run["counts_json"])["score_scored"] == 3 == n_scores  # nothing lost


def test_bad_settings_fail_before_any_work(tmp_path, checkpoint):
    pool = _pool(tmp_path / "pool", per_class=1, noise=0)
    with pytest.raises(ValueError, match="needs --checkpoint"):
        mine(_config(tmp_path, None, pool))
    with pytest.raises(FileNotFoundError, match="pool source not found: .*missing"):
        mine(_config(tmp_path, checkpoint, tmp_path / "missing"))
    with pytest.raises(ValueError, match="--hardness must be one of"):
        mine(_config(tmp_path, checkpoint, pool, hardness="margin"))
    with pytest.raises(ValueError, match="needs --clip-checkpoint"):
        mine(_config(tmp_path, checkpoint, pool, embedder="open_clip"))
    assert not (tmp_path / "c.db").exists()


def test_energy_hardness_and_rerun_with_another_mode_rescore_without_a_forward(
    tmp_path, checkpoint
):
    pool = _pool(tmp_path / "pool", per_class=1, noise=1)
    result = mine(_config(tmp_path, checkpoint, pool, hardness="energy"), log=lambda _: None)
    with store.connect(result.db) as conn:
        rows = conn.execute("SELECT top_score, hardness_score, energy_score FROM scores").fetchall()
    energy = np.array([r["energy_score"] for r in rows])
    np.testing.assert_allclose(
        [r["hardness_score"] for r in rows], 1 / (1 + np.exp(-(energy - np.log(3)))), rtol=1e-6
    )
    lines: list[str] = []
    mine(_config(tmp_path, checkpoint, pool), log=lines.append)
    assert lines[1].startswith("score: 0 images scored")
    with store.connect(result.db) as conn:
        rows = conn.execute("SELECT top_score, hardness_score FROM scores").fetchall()
    assert all(r["top_score"] == r["hardness_score"] for r in rows)


TINY_CLIP = "hardood-mine-test-tiny-vit"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny ViT CLIP registered with open_clip; random weights saved as a local checkpoint."""
    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("clip")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32,
                       "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    }  # fmt: skip
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), folder / "tiny_clip.pt")
    return folder / "tiny_clip.pt"


def test_open_clip_embedder_adds_clip_scores_to_existing_rows(tmp_path, checkpoint, tiny_clip):
    from PIL import Image

    from curate.score.clip import OpenClipEmbedder

    pool = _pool(tmp_path / "pool", per_class=1, noise=1)
    mine(_config(tmp_path, checkpoint, pool), log=lambda _: None)
    config = _config(
        tmp_path, checkpoint, pool, embedder="open_clip", clip_model=TINY_CLIP,
        clip_checkpoint=tiny_clip, clip_fg_weight=0.5,
    )  # fmt: skip
    lines: list[str] = []
    result = mine(config, log=lines.append)
    assert lines[1].startswith("score: 4 images scored")  # pending: no CLIP embedding yet
    clip = OpenClipEmbedder(TINY_CLIP, tiny_clip)
    with store.connect(result.db) as conn:
        rows = conn.execute(
            "SELECT s.sha256, s.clip_fg_score, s.run_id, p.relpath FROM scores s "
            "JOIN image_paths p USING (sha256) ORDER BY p.relpath"
        ).fetchall()
    assert len(rows) == 4 and {r["run_id"] for r in rows} == {1}  # rows kept, score added
    images = [np.asarray(Image.open(pool / r["relpath"]).convert("RGB")) for r in rows]
    direct = clip.embed(images)
    stored = _vectors(result.db, clip.name, direct.shape[1], [r["sha256"] for r in rows])
    np.testing.assert_allclose(stored, direct, atol=1e-5)
    np.testing.assert_allclose(
        [r["clip_fg_score"] for r in rows],
        clip.foreground_probability(direct, CLASS_NAMES),
        atol=1e-5,
    )
    frame = _queue(result.db)
    assert frame["clip_fg_score"].notna().all()
    assert all("CLIP foreground" in reason for reason in frame["reason"])
    again: list[str] = []
    mine(config, log=again.append)
    assert again[1].startswith("score: 0 images scored")


def _parse(argv):
    return parse_args(["mine", *argv])


def test_cli_options_map_onto_the_config():
    args = _parse(
        ["--db", "x.db", "--checkpoint", "ck.pt", "--pool", "a", "b.csv", "--preset", "world",
         "--expand-from-verdicts", "--no-amp", "--min-hardness", "0.7", "--hardness", "energy"]
    )  # fmt: skip
    config = cfg.config_from_args(args, MineConfig, PRESETS)
    assert config.db == Path("x.db") and config.checkpoint == Path("ck.pt")
    assert config.pool == ("a", "b.csv") and config.image_size == 64  # from the world preset
    assert config.expand_from_verdicts is True and config.amp is False and config.rehash is False
    assert config.min_hardness == 0.7 and config.hardness == "energy"
    assert cfg.config_from_args(_parse([]), MineConfig, PRESETS) == MineConfig()


def test_loader_workers_default_to_none_on_a_cpu():
    import torch

    from curate.mine import loader_workers

    assert loader_workers(None, torch.device("cpu")) == 0
    assert loader_workers(3, torch.device("cpu")) == 3
    assert 1 <= loader_workers(None, torch.device("cuda")) <= 8


def test_cli_runs_mine_and_prints_the_summary(tmp_path, checkpoint, capsys):
    pool = _pool(tmp_path / "pool", per_class=1, noise=1)
    db = tmp_path / "c.db"
    args = _parse(["--db", str(db), "--checkpoint", str(checkpoint), "--pool", str(pool),
                   "--workers", "0", "--batch-size", "2"])  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ingest: 4 files listed" in out and "bad images: none" in out
    assert f"`hardood queue --db {db.resolve()}`" in out


# ---- kill -9 in the middle of scoring, then resume ------------------------------------------


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path, checkpoint):
    pool = tmp_path / "pool"
    n_images = 60
    for i in range(n_images):
        image = cue_image(i % 3, 5000 + i) if i % 2 else noise_image(5000 + i)
        save_image(image, pool / f"img{i:03d}.png")
    db = tmp_path / "killed.db"
    command = [
        sys.executable, "-m", "app.cli", "mine", "--db", str(db), "--checkpoint", str(checkpoint),
        "--pool", str(pool), "--batch-size", "4", "--workers", "1", "--dup-threshold", "0.9999",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), HARDOOD_QUIET="1")
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    scored_at_kill = 0
    deadline = time.time() + 180
    try:
        while time.time() < deadline and process.poll() is None:
            if db.is_file():
                try:
                    scored_at_kill = _counts(db, "SELECT COUNT(*) FROM scores")
                except Exception:  # the schema may not exist yet
                    scored_at_kill = 0
                if scored_at_kill >= 8:
                    process.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stdout.read().decode()[-2000:]
    assert 8 <= scored_at_kill < n_images
    assert _counts(db, "SELECT status FROM runs") == "running"  # it never got to finish
    kept = _counts(db, "SELECT COUNT(*) FROM scores")
    assert kept >= scored_at_kill

    lines: list[str] = []
    config = MineConfig(db=db, checkpoint=checkpoint, pool=(str(pool),), batch_size=4, workers=0,
                        dup_threshold=0.9999)  # fmt: skip
    mine(config, log=lines.append)
    assert f"{n_images} unchanged" in lines[0]
    assert lines[1].startswith(f"score: {n_images - kept} images scored")
    assert _counts(db, "SELECT COUNT(*) FROM scores") == n_images
    assert _counts(db, "SELECT COUNT(DISTINCT sha256) FROM scores") == n_images
    embedder = classifier_embedder_name(_ck_sha(checkpoint))
    for name in (embedder, THUMB_EMBEDDER, CONFIRM_EMBEDDER):
        where = f"FROM embeddings WHERE embedder = '{name}'"
        assert _counts(db, f"SELECT COUNT(*) {where}") == n_images
        assert _counts(db, f"SELECT COUNT(DISTINCT row) {where}") == n_images

    # every stored row equals what one uninterrupted run computes
    clean = tmp_path / "clean.db"
    mine(replace(config, db=clean), log=lambda _: None)
    with store.connect(db) as conn:
        shas = [r[0] for r in conn.execute("SELECT sha256 FROM scores ORDER BY sha256")]
    for name in ("top_score", "top_class", "energy_score"):
        sql = f"SELECT {name} FROM scores ORDER BY sha256"
        with store.connect(db) as a, store.connect(clean) as b:
            np.testing.assert_allclose(
                [r[0] for r in a.execute(sql)], [r[0] for r in b.execute(sql)], rtol=1e-5
            )
    dim = 512
    np.testing.assert_allclose(
        _vectors(db, embedder, dim, shas), _vectors(clean, embedder, dim, shas), atol=1e-6
    )
    assert _queue(db)["sha256"].tolist() == _queue(clean)["sha256"].tolist()


def test_a_store_copied_without_its_embeddings_folder_is_explained_and_rebuilt_by_mine(
    tmp_path, checkpoint, capsys
):
    pool = _pool(tmp_path / "pool")
    original = mine(_config(tmp_path, checkpoint, pool), log=lambda _: None)
    copy = tmp_path / "copy" / "c.db"
    copy.parent.mkdir()
    shutil.copy(original.db, copy)  # the .db alone, as a newcomer might copy "the store"
    sha = original.queue["sha256"].iloc[0]
    similar = ["similar", "--db", str(copy), "--like", sha[:12], "--k", "3"]
    assert main(similar) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"hardood similar: error: {copy}: its ")
    assert f"embeddings folder {copy.parent / 'c.embeddings'} is missing" in error[0]
    assert "re-run `hardood mine` with the same checkpoint to re-embed the images" in error[0]
    # re-running mine with the same checkpoint re-embeds what the folder held; scores are kept
    lines: list[str] = []
    mine(_config(tmp_path, checkpoint, pool, db=copy), log=lines.append)
    assert lines[1].startswith("embeddings: 24 vectors missing from ")  # 8 images, 3 embedders
    assert lines[2].startswith("score: 8 images scored")
    assert _counts(copy, "SELECT COUNT(*) FROM scores") == 8
    assert main(similar) == 0
    rebuilt = capsys.readouterr().out
    assert main(["similar", "--db", str(original.db), "--like", sha[:12], "--k", "3"]) == 0
    assert rebuilt == capsys.readouterr().out
