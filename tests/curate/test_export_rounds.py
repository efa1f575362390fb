"""Verdicts outlive the queue: two real rounds (mine, review, re-mine with another checkpoint,
review more) and one export that holds both, each row with the checkpoint that ranked it."""

from __future__ import annotations

import pytest

from curate import store
from curate.export.build import build_export, export_manifest
from curate.mine import mine
from curate.mine_config import MineConfig
from curate.review import annotators, leases, verdicts
from tests.curate.curate_fixtures import CLASS_NAMES, cue_image, planted_checkpoint, save_image
from wood_train.manifest.validate import validate_manifest


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("round_checkpoints")
    return [(folder / f"round{i}.pt", planted_checkpoint(folder / f"round{i}.pt", seed=i))
            for i in (1, 2)]  # fmt: skip


def _mine(tmp_path, checkpoint, pool):
    config = MineConfig(
        db=tmp_path / "c.db", checkpoint=checkpoint, pool=(str(pool),), batch_size=4, workers=0,
        dup_threshold=0.9999, clusters_per_class=2,
    )  # fmt: skip
    return mine(config, log=lambda line: None)


def _judge(conn, name, n, verdict):
    name = annotators.sign_in(conn, name)
    page = leases.lease_next(conn, name, n=n)
    result = verdicts.submit_verdicts(conn, name, [(i.sha256, verdict, 1.5) for i in page])
    assert not result.refused
    return [i.sha256 for i in page]


def test_an_export_holds_every_round_with_the_checkpoint_that_ranked_it(tmp_path, checkpoints):
    (first_ck, first_sha), (second_ck, second_sha) = checkpoints
    assert first_sha != second_sha
    pool = tmp_path / "pool"
    for k in range(len(CLASS_NAMES)):
        for s in range(3):
            save_image(cue_image(k, 3000 + 50 * k + s), pool / f"cue{k}_{s}.png")
    first_run = _mine(tmp_path, first_ck, pool).run_id
    with store.connect(tmp_path / "c.db") as conn:
        round1 = _judge(conn, "ana", 4, "no_foreground")
    second_run = _mine(tmp_path, second_ck, pool).run_id  # the re-mine replaces the queue
    with store.connect(tmp_path / "c.db") as conn:
        queued = {row[0] for row in conn.execute("SELECT sha256 FROM queue")}
        assert queued and not queued & set(round1)  # reviewed images left the queue
        round2 = _judge(conn, "bo", 3, "contains_foreground")
        rows, meta, _ = build_export(conn)
        by_sha = rows.set_index("sha256")
        assert sorted(by_sha.index) == sorted(round1 + round2)
        for shas, run, checkpoint in (
            (round1, first_run, first_sha),
            (round2, second_run, second_sha),
        ):
            assert by_sha.loc[shas, "scoring_checkpoint_sha256"].tolist() == [checkpoint] * len(
                shas
            )
            assert by_sha.loc[shas, "queue_run_id"].tolist() == [run] * len(shas)
        assert sorted(by_sha.loc[round1, "queue_rank"]) == [1, 2, 3, 4]
        assert [r["scoring_checkpoint_sha256"] for r in meta["mining"]["rounds"]] == [
            first_sha, second_sha,
        ]  # fmt: skip
        assert meta["scoring_checkpoint_sha256"] == second_sha
        # the queue empties (everything reviewed, or a re-mine that finds nothing): still exported
        with store.transaction(conn):
            conn.execute("DELETE FROM queue")
        out = export_manifest(conn, tmp_path / "both_rounds").out_dir
    loaded = validate_manifest(out, expected_classes=CLASS_NAMES)
    assert len(loaded.rows) == 7 and len(loaded.ood_paths) == 4
    assert sorted(loaded.ood_paths) == sorted(
        pool / p for p in loaded.rows.loc[loaded.rows["verdict"] == "no_foreground", "path"]
    )
