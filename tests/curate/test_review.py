"""Review API: leases, overlap, verdicts, undo, progress, agreement, and safe image access."""

from __future__ import annotations

import math
import multiprocessing
import os

import numpy as np
import pandas as pd
import pytest

from curate import store
from curate.ingest import image_files
from curate.review import agreement, annotators, leases, progress, verdicts
from curate.review.agreement import cohen_kappa, fleiss_kappa
from tests.curate.review_fixtures import CLASSES, build_review_store, cue_heatmap, sign_in_all
from wood_train.errors import DataError

T0 = 1_700_000_000.0


@pytest.fixture
def world(tmp_path):
    return build_review_store(tmp_path, 8)


def test_sign_in_normalises_and_rejects_bad_names(world, conn):
    assert annotators.sign_in(conn, "  ana   b ") == "ana b"
    annotators.sign_in(conn, "ana b")  # twice is fine
    assert [r[0] for r in conn.execute("SELECT name FROM annotators")] == ["ana b"]
    for bad in ("", "   ", "-ana", "a" * 65, "ana;drop", "<b>ana"):
        with pytest.raises(ValueError, match="annotator name"):
            annotators.sign_in(conn, bad)
    with pytest.raises(DataError, match="has not signed in"):
        leases.lease_next(conn, "stranger")


def test_lease_next_follows_rank_and_holds_until_judged(world, conn):
    (ana,) = sign_in_all(conn, "ana")
    items = leases.lease_next(conn, ana, n=3, now=T0)
    assert [i.sha256 for i in items] == world.shas[:3]
    assert [i.rank for i in items] == [1, 2, 3]
    # asking again (a reload, a restart) gives the same held items back, not new ones
    again = leases.lease_next(conn, ana, n=3, now=T0 + 5)
    assert [i.sha256 for i in again] == world.shas[:3]
    assert again[0].expires_at == pytest.approx(T0 + 5 + leases.DEFAULT_LEASE_SECONDS)
    verdicts.record_verdict(conn, ana, world.shas[0], "no_foreground", 1.5, now=T0 + 6)
    # held items first, then the next fresh one in rank order
    assert [i.sha256 for i in leases.lease_next(conn, ana, n=3, now=T0 + 7)] == world.shas[1:4]


def test_item_shows_top_class_scores_reason_and_heatmap(world, conn):
    (ana,) = sign_in_all(conn, "ana")
    item = leases.lease_next(conn, ana, now=T0)[0]
    assert item.top_class == world.top_classes[0] == "aeroplane"
    assert item.top_score == pytest.approx(0.99)
    assert [name for name, _ in item.top3] == ["aeroplane", "boat", "train"]
    assert [score for _, score in item.top3] == pytest.approx([0.99, 0.33, 0.11])
    assert item.reason == "sky scores aeroplane 0.99"
    np.testing.assert_array_equal(leases.item_heatmap(conn, item.sha256), cue_heatmap("sky"))
    assert CLASSES[0] == "aeroplane"


def test_two_annotators_never_hold_the_same_item_and_leases_expire(world, conn):
    ana, bo = sign_in_all(conn, "ana", "bo")
    first = leases.lease_next(conn, ana, n=3, lease_seconds=60, now=T0)
    second = leases.lease_next(conn, bo, n=3, lease_seconds=60, now=T0 + 1)
    assert [i.sha256 for i in first] == world.shas[:3]
    assert [i.sha256 for i in second] == world.shas[3:6]
    # ana walks away; once her lease is over, bo's next request picks her items up
    verdicts.record_verdict(conn, bo, world.shas[3], "no_foreground", 2.0, now=T0 + 2)
    later = leases.lease_next(conn, bo, n=3, lease_seconds=60, now=T0 + 60.5)
    assert [i.sha256 for i in later] == [world.shas[0], world.shas[4], world.shas[5]]


def test_overlap_k_gives_each_item_k_independent_verdicts(world, conn):
    ana, bo, cy = sign_in_all(conn, "ana", "bo", "cy")
    sha = world.shas[0]
    assert leases.lease_next(conn, ana, k=2, now=T0)[0].sha256 == sha
    # while ana holds it, nobody else gets it
    assert leases.lease_next(conn, bo, k=2, now=T0)[0].sha256 == world.shas[1]
    verdicts.record_verdict(conn, ana, sha, "no_foreground", 1.0, now=T0 + 1)
    leases.release(conn, bo)
    # one verdict of two: bo gets it next, ana never sees it again
    assert leases.lease_next(conn, bo, k=2, now=T0 + 2)[0].sha256 == sha
    assert sha not in [i.sha256 for i in leases.lease_next(conn, ana, k=2, n=8, now=T0 + 2)]
    verdicts.record_verdict(conn, bo, sha, "contains_foreground", 1.0, now=T0 + 3)
    leases.release(conn, ana)
    # two verdicts: done for everyone
    assert sha not in [i.sha256 for i in leases.lease_next(conn, cy, k=2, n=8, now=T0 + 4)]
    summary = progress.progress_summary(conn, k=2, now=T0 + 5)
    assert summary["done_items"] == 1 and summary["remaining_items"] == 7
    assert summary["verdicts_needed"] == 7 * 2


def test_queue_runs_out(world, conn):
    (ana,) = sign_in_all(conn, "ana")
    items = leases.lease_next(conn, ana, n=20, now=T0)
    assert len(items) == 8
    verdicts.record_verdicts(conn, ana, [(i.sha256, "no_foreground", 1.0) for i in items])
    assert leases.lease_next(conn, ana, n=5) == []


def test_record_verdict_checks_input_and_ignores_a_double_submit(world, conn):
    (ana,) = sign_in_all(conn, "ana")
    sha = leases.lease_next(conn, ana, now=T0)[0].sha256
    with pytest.raises(ValueError, match="is not one of"):
        verdicts.record_verdict(conn, ana, sha, "maybe", 1.0)
    with pytest.raises(ValueError, match="seconds"):
        verdicts.record_verdict(conn, ana, sha, "unsure", -3.0)
    with pytest.raises(ValueError, match="source"):
        verdicts.record_verdict(conn, ana, sha, "unsure", 1.0, source="web")
    with pytest.raises(ValueError, match="source"):  # the lead's verdicts go through adjudicate
        verdicts.record_verdict(conn, ana, sha, "unsure", 1.0, source="lead")
    with pytest.raises(DataError, match="has not signed in"):
        verdicts.record_verdict(conn, "nobody", sha, "unsure", 1.0)
    unknown = verdicts.submit_verdicts(conn, ana, [("0" * 64, "unsure", 1.0)])
    assert [(r.sha256, r.reason) for r in unknown.refused] == [("0" * 64, verdicts.NOT_IN_QUEUE)]
    # seconds default to the time since the lease
    first = verdicts.record_verdict(conn, ana, sha, "bad_image", now=T0 + 4.5)
    assert first is not None
    assert verdicts.record_verdict(conn, ana, sha, "no_foreground", 1.0) is None
    again = verdicts.submit_verdicts(conn, ana, [(sha, "no_foreground", 1.0)])
    assert [r.reason for r in again.refused] == [verdicts.ALREADY_JUDGED]
    assert not again.stale and again.message is None  # a double submit is not an expired page
    frame = verdicts.live_verdicts(conn)
    assert frame[["sha256", "annotator", "verdict", "seconds", "source"]].values.tolist() == [
        [sha, "ana", "bad_image", 4.5, "app"]
    ]
    assert conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def test_undo_marks_the_last_verdict_and_gives_the_item_back_first(world, conn):
    (ana,) = sign_in_all(conn, "ana")
    for i, verdict in enumerate(["no_foreground", "contains_foreground"]):
        sha = leases.lease_next(conn, ana, now=T0 + i)[0].sha256
        verdicts.record_verdict(conn, ana, sha, verdict, 2.0, now=T0 + i)
    assert leases.lease_next(conn, ana, now=T0 + 3)[0].sha256 == world.shas[2]
    assert verdicts.undo_last(conn, ana, now=T0 + 4) == world.shas[1]
    assert verdicts.verdict_count(conn, ana) == 1
    # the undone item is shown before the one ana held
    assert leases.lease_next(conn, ana, now=T0 + 5)[0].sha256 == world.shas[1]
    verdicts.record_verdict(conn, ana, world.shas[1], "unsure", 1.0, now=T0 + 6)
    frame = verdicts.live_verdicts(conn)
    assert dict(zip(frame["sha256"], frame["verdict"])) == {
        world.shas[0]: "no_foreground",
        world.shas[1]: "unsure",
    }
    # nothing is deleted: the undone row is kept
    assert conn.execute("SELECT COUNT(*) FROM verdicts WHERE undone = 1").fetchone()[0] == 1
    (bo,) = sign_in_all(conn, "bo")
    assert verdicts.undo_last(conn, bo) is None


def test_progress_frame_and_summary(world, conn):
    ana, bo, _ = sign_in_all(conn, "ana", "bo", "cy")
    plan = [(ana, 0, "no_foreground", 2.0), (ana, 1, "no_foreground", 4.0),
            (ana, 2, "contains_foreground", 9.0), (bo, 3, "unsure", 3.0)]  # fmt: skip
    for name, i, verdict, seconds in plan:
        verdicts.record_verdict(conn, name, world.shas[i], verdict, seconds, now=T0 + i)
    frame = progress.progress_frame(conn).set_index("annotator")
    assert frame.loc["ana", "verdicts"] == 3 and frame.loc["bo", "verdicts"] == 1
    assert frame.loc["cy", "verdicts"] == 0 and pd.isna(frame.loc["cy", "median_seconds"])
    assert frame.loc["ana", "median_seconds"] == 4.0 and frame.loc["ana", "total_seconds"] == 15.0
    assert frame.loc["ana", "contains_foreground"] == 1 and frame.loc["bo", "unsure"] == 1
    summary = progress.progress_summary(conn, k=1, now=T0 + 10)
    assert summary["done_items"] == 4 and summary["remaining_items"] == 4
    assert summary["median_seconds"] == 3.5 and summary["active_annotators"] == 2
    assert summary["eta_seconds"] == pytest.approx(4 * 3.5 / 2)
    assert progress.progress_summary(conn, now=T0 + 10_000)["active_annotators"] == 0


def test_agreement_cohen_for_two_and_fleiss_for_more(tmp_path):
    world = build_review_store(tmp_path, 4)
    with store.connect(world.db) as conn:
        _agree_then_disagree(world, conn)


def _agree_then_disagree(world, conn):
    ana, bo, cy = sign_in_all(conn, "ana", "bo", "cy")
    # ana vs bo on four items: yyyn vs yynn -> kappa 0.5 (worked out in the docstring)
    for i, (a, b) in enumerate(zip("yyyn", "yynn")):
        label = {"y": "no_foreground", "n": "contains_foreground"}
        verdicts.record_verdict(conn, ana, world.shas[i], label[a], 1.0, k=3)
        verdicts.record_verdict(conn, bo, world.shas[i], label[b], 1.0, k=3)
    result = agreement.agreement_summary(conn)
    assert result["method"] == "cohen" and result["annotators"] == ["ana", "bo"]
    assert result["kappa"] == pytest.approx(0.5) and result["items"] == 4
    assert result["all_agree"] == pytest.approx(0.75)
    # a third annotator on two items: Fleiss over the overlapping items
    verdicts.record_verdict(conn, cy, world.shas[0], "no_foreground", 1.0, k=3)
    verdicts.record_verdict(conn, cy, world.shas[3], "no_foreground", 1.0, k=3)
    result = agreement.agreement_summary(conn)
    counts = np.array([[3, 0], [2, 0], [1, 1], [1, 2]])  # no_fg / contains per item
    assert result["method"] == "fleiss"
    assert result["kappa"] == pytest.approx(fleiss_kappa(counts))


def test_agreement_without_overlap(world, conn):
    (ana,) = sign_in_all(conn, "ana")
    verdicts.record_verdict(conn, ana, world.shas[0], "no_foreground", 1.0)
    assert agreement.agreement_summary(conn) == {
        "method": None, "kappa": None, "items": 0, "annotators": [], "all_agree": None,
    }  # fmt: skip


def test_kappa_formulas_on_published_examples():
    # Cohen: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.4
    first = ["y"] * 25 + ["n"] * 25
    second = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert math.isnan(cohen_kappa(["y", "y"], ["y", "y"]))
    # Fleiss (1971) as tabulated on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210
    table = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])  # fmt: skip
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    with pytest.raises(ValueError, match="two ratings"):
        fleiss_kappa(np.array([[1, 0]]))


def _lease_and_judge(db, name, rounds, out):
    """One annotator process: lease, judge, repeat; reports what it was handed."""
    seen = []
    with store.connect(db) as conn:  # each process owns its connection
        annotators.sign_in(conn, name)
        for _ in range(rounds):
            items = leases.lease_next(conn, name, n=2, lease_seconds=600)
            if not items:
                break
            seen += [i.sha256 for i in items]
            verdicts.record_verdicts(conn, name, [(i.sha256, "no_foreground", 0.1) for i in items])
    out.put((name, seen))


def test_leasing_is_atomic_across_processes(tmp_path):
    world = build_review_store(tmp_path, 40)
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    out = context.Queue()
    workers = [
        context.Process(target=_lease_and_judge, args=(world.db, f"p{i}", 40, out))
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    handed = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    all_seen = [sha for _, seen in handed for sha in seen]
    assert sorted(all_seen) == sorted(world.shas)  # every item exactly once, to one process
    with store.connect(world.db) as conn:
        given = verdicts.live_verdicts(conn)
    assert given["sha256"].is_unique and len(given) == 40


def test_image_access_stays_inside_registered_roots(world, conn, tmp_path):
    data, path = image_files.read_image_bytes(conn, world.shas[0])
    assert path == world.root / world.relpaths[0] and data == path.read_bytes()
    secret = tmp_path / "secret.png"
    secret.write_bytes(data)  # same bytes, outside the root: must still not be served
    (world.root / "link.png").symlink_to(secret)
    (world.root / "inner.png").symlink_to(world.root / world.relpaths[1])
    crafted = ["../secret.png", str(secret), "link.png", "sky/../../secret.png", "", "a\x00b"]
    for rel in crafted:
        assert image_files.contained_file(world.root, rel) is None, rel
    assert image_files.contained_file(world.root, "inner.png") == world.root / world.relpaths[1]
    assert image_files.contained_file("relative/root", world.relpaths[0]) is None
    # a crafted row pointing out of the root, for a real queue item
    with store.transaction(conn):
        conn.execute("DELETE FROM image_paths WHERE sha256 = ?", (world.shas[0],))
        conn.execute(
            "INSERT INTO image_paths(root_id, relpath, sha256) VALUES (1, '../secret.png', ?)",
            (world.shas[0],),
        )
    with pytest.raises(FileNotFoundError, match="no registered path"):
        image_files.read_image_bytes(conn, world.shas[0])
    # a file whose bytes changed since mining is refused
    (world.root / world.relpaths[2]).write_bytes(data)
    with pytest.raises(ValueError, match="changed since it was mined"):
        image_files.read_image_bytes(conn, world.shas[2])
