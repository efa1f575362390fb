"""`hardood mine --engine ray`: the same answers as the local engine, shards merged once, resumable.

The Ray tests start one local Ray (2 CPUs) for the module. Ray is an optional extra; without it
these tests are skipped with the reason, and `make test` installs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from curate_fixtures import (
    cached_planted_checkpoint,
    cue_image,
    noise_image,
    save_image,
    write_awkward_files,
)

from app.cli import main
from curate import store
from curate.mine import mine
from curate.mine_config import MineConfig
from curate.neighbours.near_duplicates import CONFIRM_EMBEDDER, THUMB_EMBEDDER
from curate.neighbours.vector_index import EmbeddingFile
from curate.queue.build import queue_frame
from curate.score.scored_batch import ScoredBatch, ScoreTarget, write_scored
from curate.score.scoring import classifier_embedder_name
from curate.score.shards import list_shards, merge_shards, read_bytes, write_shard
from wood_train.config import replace

REPO = Path(__file__).resolve().parents[2]
NEEDS_RAY = "Ray is an optional extra (pip install -e '.[ray]'; `make test` installs it)"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return cached_planted_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason=NEEDS_RAY)
    from curate.score.ray_engine import start_ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start_ray(None)  # applies the engine's Ray Data settings to this session
    yield ray
    ray.shutdown()


def _pool(folder: Path, per_class: int = 4, noise: int = 4) -> Path:
    """Cue images of each class, noise, a near duplicate, an exact copy and every bad kind."""
    for k in range(3):
        for s in range(per_class):
            save_image(cue_image(k, 100 + 10 * k + s), folder / f"cue{k}_{s}.png")
    for s in range(noise):
        save_image(noise_image(300 + s), folder / f"noise_{s}.png")
    near = cue_image(0, 100)
    near[0, :2] += 1
    save_image(near, folder / "cue0_0_near.png")
    (folder / "cue1_0_copy.png").write_bytes((folder / "cue1_0.png").read_bytes())
    write_awkward_files(folder / "odd")
    return folder


def _config(db: Path, checkpoint: Path, pool: Path, **changes) -> MineConfig:
    base = MineConfig(db=db, checkpoint=checkpoint, pool=(str(pool),), batch_size=4, workers=0,
                      clusters_per_class=2, min_hardness=0.0)  # fmt: skip
    return replace(base, **changes)


def _scores(db: Path) -> pd.DataFrame:
    with store.connect(db) as conn:
        rows = conn.execute(
            "SELECT s.sha256, s.probs, s.top_class, s.top_score, s.hardness_score, "
            "s.energy_score, s.heatmap, i.width, i.height FROM scores s "
            "JOIN images i USING (sha256) ORDER BY s.sha256"
        ).fetchall()
    return pd.DataFrame([dict(r) for r in rows]).set_index("sha256")


def _bad(db: Path) -> dict[str, str]:
    with store.connect(db) as conn:
        return dict(conn.execute("SELECT sha256, bad_reason FROM images WHERE status = 'bad'"))


def _vectors(db: Path, embedder: str, shas: list[str]) -> np.ndarray:
    with store.connect(db) as conn:
        return EmbeddingFile.open(conn, embedder).load(shas)


def _assert_same_store(local_db: Path, ray_db: Path, embedder: str) -> None:
    local, ray = _scores(local_db), _scores(ray_db)
    assert list(local.index) == list(ray.index)
    for column in ("top_score", "hardness_score", "energy_score"):
        np.testing.assert_allclose(ray[column], local[column], rtol=0, atol=1e-5)
    assert (ray["top_class"] == local["top_class"]).all()
    assert (ray[["width", "height"]] == local[["width", "height"]]).all().all()
    for sha in local.index:
        np.testing.assert_allclose(
            store.decode_probs(ray.at[sha, "probs"]),
            store.decode_probs(local.at[sha, "probs"]),
            rtol=0,
            atol=1e-5,
        )
        heat_ray = np.frombuffer(ray.at[sha, "heatmap"], np.uint8).astype(int)
        heat_local = np.frombuffer(local.at[sha, "heatmap"], np.uint8).astype(int)
        assert np.abs(heat_ray - heat_local).max() <= 1  # uint8 rounding of equal maps
    shas = list(local.index)
    for name in (embedder, THUMB_EMBEDDER):
        np.testing.assert_allclose(
            _vectors(ray_db, name, shas), _vectors(local_db, name, shas), rtol=0, atol=1e-5
        )
    np.testing.assert_array_equal(
        _vectors(ray_db, CONFIRM_EMBEDDER, shas), _vectors(local_db, CONFIRM_EMBEDDER, shas)
    )
    assert _bad(ray_db) == _bad(local_db)


def test_ray_and_local_engines_store_the_same_scores_queue_and_bad_reasons(
    tmp_path, checkpoint, ray_local
):
    pool = _pool(tmp_path / "pool")
    local = mine(_config(tmp_path / "local.db", checkpoint, pool), log=lambda _: None)
    lines: list[str] = []
    on_ray = mine(_config(tmp_path / "ray.db", checkpoint, pool, engine="ray"), log=lines.append)
    assert any(line.startswith("merge: ") for line in lines)
    # 12 cue images, 4 noise, the near duplicate and 5 awkward but usable files
    assert local.counts["score_scored"] == on_ray.counts["score_scored"] == 22
    assert on_ray.bad_reasons == local.bad_reasons == {
        "empty_file": 1, "not_an_image": 1, "too_large": 1, "truncated": 1,
    }  # fmt: skip
    embedder = classifier_embedder_name(_ck_sha(checkpoint))
    _assert_same_store(local.db, on_ray.db, embedder)
    with store.connect(local.db) as a, store.connect(on_ray.db) as b:
        pd.testing.assert_frame_equal(
            queue_frame(a).drop(columns="path"), queue_frame(b).drop(columns="path")
        )
    assert len(local.queue) == 21 and (local.queue["group_size"] == 2).sum() == 1  # near dup
    assert list_shards(str(tmp_path / "ray.shards" / _ck_sha(checkpoint)[:12])) == []
    # a re-run finds nothing to score and changes nothing
    again = mine(_config(tmp_path / "ray.db", checkpoint, pool, engine="ray"), log=lambda _: None)
    assert again.counts.get("score_scored", 0) == 0
    _assert_same_store(local.db, on_ray.db, embedder)


def _ck_sha(checkpoint: Path) -> str:
    from wood_train.model.checkpoint import load_cam_net

    return load_cam_net(checkpoint)[1]["weights_sha256"]


def _dump(db: Path) -> list:
    with store.connect(db) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("images", "scores", "embeddings")
        ]


def test_merging_shards_is_idempotent_by_image_and_checkpoint(tmp_path, checkpoint):
    pool = _pool(tmp_path / "pool", per_class=1, noise=1)
    db = mine(_config(tmp_path / "c.db", checkpoint, pool), log=lambda _: None).db
    ck = _ck_sha(checkpoint)
    target = ScoreTarget(ck, classifier_embedder_name(ck))
    with store.connect(db) as conn:
        shas = [r[0] for r in conn.execute("SELECT sha256 FROM scores ORDER BY sha256")]
        stored = _scores(db)
        files = {n: EmbeddingFile.open(conn, n) for n in (target.classifier_embedder,
                                                           THUMB_EMBEDDER, CONFIRM_EMBEDDER)}  # fmt: skip
        batch = ScoredBatch(
            sha256=shas,
            size=[tuple(stored.loc[s, ["width", "height"]]) for s in shas],
            probs=np.stack([store.decode_probs(stored.at[s, "probs"]) for s in shas]),
            top_class=stored.loc[shas, "top_class"].to_numpy(),
            top_score=stored.loc[shas, "top_score"].to_numpy(),
            hardness_score=stored.loc[shas, "hardness_score"].to_numpy(),
            energy_score=stored.loc[shas, "energy_score"].to_numpy(),
            heatmap=np.stack([store.decode_heatmap(stored.at[s, "heatmap"], 32) for s in shas]),
            embedding=files[target.classifier_embedder].load(shas),
            descriptor=files[THUMB_EMBEDDER].load(shas),
            thumbnail=files[CONFIRM_EMBEDDER].load(shas),
            bad=[(s, r, "planted") for s, r in _bad(db).items()],
        )
    back = ScoredBatch.from_arrow(batch.to_arrow())
    assert back.sha256 == batch.sha256 and back.bad == batch.bad and back.size == batch.size
    np.testing.assert_array_equal(back.heatmap, batch.heatmap)
    np.testing.assert_array_equal(back.thumbnail, batch.thumbnail)
    folder = str(tmp_path / "shards")
    write_shard(batch, folder)
    write_shard(batch, folder)  # the same images twice, as a retried batch would leave them
    before = _dump(db)
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "c.embeddings").iterdir()}
    with store.connect(db) as conn:
        report = merge_shards(conn, folder, target, run_id=1)
        assert report.shards == 2 and report.images == 2 * len(shas)
        assert merge_shards(conn, folder, target, run_id=1).shards == 0  # shards are gone
        write_scored(conn, target, 1, batch)
    assert _dump(db) == before
    assert {p.name: p.stat().st_size for p in (tmp_path / "c.embeddings").iterdir()} == sizes


def test_read_bytes_takes_a_path_or_a_filesystem_uri(tmp_path):
    path = tmp_path / "a b.bin"
    path.write_bytes(b"\x00\x01payload")
    assert read_bytes(str(path)) == read_bytes(path.as_uri()) == b"\x00\x01payload"
    with pytest.raises(OSError):
        read_bytes(str(tmp_path / "missing.bin"))
    with pytest.raises(OSError, match="over the 4-byte cap"):
        read_bytes(path.as_uri(), max_bytes=4)


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path, checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    pool = _pool(tmp_path / "pool", per_class=1, noise=1)
    argv = ["mine", "--db", str(tmp_path / "c.db"), "--checkpoint", str(checkpoint),
            "--pool", str(pool), "--engine", "ray"]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "hardood mine: error: --engine ray needs Ray, an optional extra: pip install "
        "'ray[data]>=2.9' (from a checkout: pip install -e '.[ray]')"
    ]
    assert not (tmp_path / "c.db").exists()


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
    return pids


def test_killed_ray_job_resumes_without_losing_or_duplicating(tmp_path, checkpoint):
    pytest.importorskip("ray", reason=NEEDS_RAY)
    pool = tmp_path / "pool"
    n_images = 64
    for s in range(n_images):
        image = cue_image(s % 3, 5000 + s) if s % 4 else noise_image(6000 + s)
        save_image(image, pool / f"img_{s:03d}.png")
    db = tmp_path / "c.db"
    # scored at 224 px so each forward is slow enough for the kill to land mid-way
    argv = [sys.executable, "-m", "app.cli", "mine", "--db", str(db), "--checkpoint",
            str(checkpoint), "--pool", str(pool), "--engine", "ray", "--batch-size", "2",
            "--workers", "0", "--clusters-per-class", "2",
            "--image-size", "224"]  # fmt: skip
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live in it
    env = dict(os.environ, HARDOOD_QUIET="1", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_TMPDIR=ray_tmp)
    shards = tmp_path / "c.shards" / _ck_sha(checkpoint)[:12]
    job = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while len(list_shards(str(shards))) < 3 and job.poll() is None:
        assert time.monotonic() < deadline, "the Ray job wrote no shard in time"
        time.sleep(0.2)
    # the driver, the local Ray it started and the scoring actor, all at once (Ray's workers
    # live in their own sessions: they are found by the temp folder this job's Ray runs in)
    ray_pids = _pids_mentioning(ray_tmp)
    os.killpg(job.pid, signal.SIGKILL)
    for pid in ray_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait()
    time.sleep(1)
    left = len(list_shards(str(shards)))
    assert 3 <= left < n_images // 2, "kill it mid-way: some shards written, not all"
    with store.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0  # never merged

    assert _pids_mentioning(ray_tmp) == []
    rerun = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    merged = re.search(
        r"merge: (\d+) shards left by an interrupted run, (\d+) images", rerun.stdout
    )
    assert merged and int(merged[1]) >= left and int(merged[2]) == 2 * int(merged[1])
    # the re-run scores exactly the images no shard held
    assert f"score: {n_images - int(merged[2])} images scored" in rerun.stdout
    assert list_shards(str(shards)) == []
    with store.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM scores").fetchone()[
            :
        ] == (
            n_images,
            n_images,
        )
        for (name,) in conn.execute("SELECT DISTINCT embedder FROM embeddings").fetchall():
            rows = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT sha256), COUNT(DISTINCT row) FROM embeddings "
                "WHERE embedder = ?",
                (name,),
            ).fetchone()[:]
            assert rows == (n_images, n_images, n_images), name
    # and every stored value is what one uninterrupted local run computes
    clean = mine(
        _config(tmp_path / "clean.db", checkpoint, pool, image_size=224), log=lambda _: None
    )
    _assert_same_store(clean.db, db, classifier_embedder_name(_ck_sha(checkpoint)))
