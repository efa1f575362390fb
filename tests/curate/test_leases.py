"""Leases mean something: late and foreign verdicts are refused, pages renew, leasing is indexed.

Each test plants the situation the hardening report describes (an expired lease, a grid page left
open, a third annotator) and asserts the exact outcome.
"""

from __future__ import annotations

import multiprocessing
import os
import random

import pytest

from curate import store
from curate.review import annotators, leases, verdicts
from curate.review.leases import _CANDIDATES, _CLAIM
from tests.curate.review_fixtures import build_review_store, sign_in_all

T0 = 1_700_000_000.0


@pytest.fixture
def world(tmp_path):
    return build_review_store(tmp_path, 30)


def _live_votes(conn, sha):
    return conn.execute(
        "SELECT COUNT(*) FROM verdicts WHERE sha256 = ? AND undone = 0 AND gold_check = 0", (sha,)
    ).fetchone()[0]


def test_a_late_verdict_after_the_lease_moved_on_is_refused(world, conn):
    ana, bo = sign_in_all(conn, "ana", "bo")
    sha = leases.lease_next(conn, ana, lease_seconds=60, now=T0)[0].sha256
    # ana's lease runs out; bo leases the item and is still judging it
    assert leases.lease_next(conn, bo, lease_seconds=60, now=T0 + 61)[0].sha256 == sha
    late = verdicts.submit_verdicts(conn, ana, [(sha, "no_foreground", 3.0)], now=T0 + 62)
    assert [r.reason for r in late.refused] == [verdicts.HELD_BY_OTHER] and late.stale
    # bo judges it; ana's second try is refused because the item has its one verdict
    assert verdicts.record_verdict(conn, bo, sha, "contains_foreground", 2.0, now=T0 + 63)
    later = verdicts.submit_verdicts(conn, ana, [(sha, "no_foreground", 3.0)], now=T0 + 64)
    assert [r.reason for r in later.refused] == [verdicts.ENOUGH_VOTES]
    assert _live_votes(conn, sha) == 1


def test_a_third_annotator_cannot_judge_an_item_leased_to_another(world, conn):
    ana, bo, cy = sign_in_all(conn, "ana", "bo", "cy")
    sha = leases.lease_next(conn, bo, k=2, now=T0)[0].sha256
    refused = verdicts.submit_verdicts(conn, cy, [(sha, "no_foreground", 1.0)], k=2, now=T0 + 1)
    assert [r.reason for r in refused.refused] == [verdicts.HELD_BY_OTHER]
    assert verdicts.record_verdict(conn, bo, sha, "no_foreground", 1.0, k=2, now=T0 + 2)
    # now free and one vote short of two: anyone may give the second, nobody a third
    assert verdicts.record_verdict(conn, cy, sha, "no_foreground", 1.0, k=2, now=T0 + 3)
    third = verdicts.submit_verdicts(conn, ana, [(sha, "no_foreground", 1.0)], k=2, now=T0 + 4)
    assert [r.reason for r in third.refused] == [verdicts.ENOUGH_VOTES]
    assert _live_votes(conn, sha) == 2


def test_an_expired_page_keeps_its_other_verdicts_and_says_so(world, conn):
    ana, bo = sign_in_all(conn, "ana", "bo")
    page = [i.sha256 for i in leases.lease_next(conn, ana, n=12, lease_seconds=60, now=T0)]
    assert page == world.shas[:12]
    # the page stays open past its lease; bo takes three of its items, judges two of them
    taken = leases.lease_next(conn, bo, n=3, lease_seconds=60, now=T0 + 100)
    assert [i.sha256 for i in taken] == page[:3]
    verdicts.record_verdicts(conn, bo, [(s, "no_foreground", 1.0) for s in page[:2]], now=T0 + 101)
    result = verdicts.submit_verdicts(
        conn, ana, [(s, "no_foreground", 1.0) for s in page], now=T0 + 102
    )
    assert [r.sha256 for r in result.refused] == page[:3]
    assert [r.reason for r in result.refused] == [verdicts.ENOUGH_VOTES] * 2 + [
        verdicts.HELD_BY_OTHER
    ]
    assert [sha for sha, _ in result.recorded] == page[3:]  # nothing else on the page is lost
    assert result.stale
    assert result.message == (
        "This page expired: 3 image(s) were not recorded (this image already has the verdicts "
        "it needs); your other 9 verdict(s) are saved. Here are fresh items."
    )
    fresh = leases.lease_next(conn, ana, n=12, lease_seconds=60, now=T0 + 103)
    assert [i.sha256 for i in fresh] == world.shas[12:24]


def test_renewal_keeps_an_active_page_and_reports_what_was_lost(world, conn):
    ana, bo = sign_in_all(conn, "ana", "bo")
    page = [i.sha256 for i in leases.lease_next(conn, ana, n=4, lease_seconds=60, now=T0)]
    # ana is active: the app renews before the lease ends, so bo cannot take the page
    assert leases.renew_leases(conn, ana, page, lease_seconds=60, now=T0 + 50) == page
    assert [i.sha256 for i in leases.lease_next(conn, bo, n=4, now=T0 + 100)] == world.shas[4:8]
    result = verdicts.submit_verdicts(
        conn, ana, [(s, "no_foreground", 1.0) for s in page], now=T0 + 105
    )
    assert not result.refused
    # a page left too long: a lapsed item nobody took comes back on renewal; a taken one does not
    page = [i.sha256 for i in leases.lease_next(conn, ana, n=2, lease_seconds=60, now=T0 + 200)]
    assert page == world.shas[8:10]
    assert [i.sha256 for i in leases.lease_next(conn, bo, n=5, now=T0 + 300)][-1] == page[0]
    assert leases.renew_leases(conn, ana, page, lease_seconds=60, now=T0 + 301) == [page[1]]
    held = conn.execute("SELECT expires_at FROM leases WHERE sha256 = ?", (page[1],)).fetchone()
    assert held[0] == pytest.approx(T0 + 361)


def test_the_overlap_recorded_in_the_store_applies_when_k_is_not_given(world, conn):
    ana, bo = sign_in_all(conn, "ana", "bo")
    assert leases.review_overlap(conn) == 1
    leases.set_review_overlap(conn, 2)
    sha = world.shas[0]
    assert verdicts.record_verdict(conn, ana, sha, "no_foreground", 1.0)
    assert verdicts.record_verdict(conn, bo, sha, "no_foreground", 1.0)  # k = 2 from the store
    with pytest.raises(ValueError, match="overlap"):
        leases.set_review_overlap(conn, 0)


def test_names_are_one_annotator_whatever_the_case_and_spacing(world, conn):
    assert annotators.sign_in(conn, "ANA ") == annotators.sign_in(conn, " ana") == "ana"
    item = leases.lease_next(conn, "Ana", now=T0)[0]
    assert verdicts.record_verdict(conn, "  aNa", item.sha256, "no_foreground", 1.0, now=T0 + 1)
    assert verdicts.verdict_count(conn, "ANA") == 1
    assert [r[0] for r in conn.execute("SELECT name FROM annotators")] == ["ana"]


def test_a_lead_holds_no_leases(world, conn):
    lead = annotators.sign_in_lead(conn, "Lee")
    with pytest.raises(ValueError, match="signed in as a lead"):
        leases.lease_next(conn, lead)
    with pytest.raises(ValueError, match="signed in as a lead"):
        verdicts.record_verdict(conn, lead, world.shas[0], "no_foreground", 1.0)


def _plan(conn, sql, params):
    return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_leasing_reads_an_index_and_never_scans_the_queue(world, conn):
    params = {"level": 0, "now": T0, "me": "ana", "limit": 20}
    plan = _plan(conn, _CANDIDATES, params)
    assert "review_items_open" in plan and "SCAN" not in plan.split("|")[0], plan
    claim = _plan(conn, _CLAIM, {"sha": "x", "me": "ana", "now": T0, "expires": T0, "k": 1})
    assert "SCAN queue" not in claim and "SCAN review_items" not in claim, claim
    assert "SCAN verdicts" not in claim and "SCAN leases" not in claim, claim


def _true_votes(conn):
    rows = conn.execute(
        "SELECT q.sha256, (SELECT COUNT(*) FROM verdicts v WHERE v.sha256 = q.sha256 "
        "AND v.undone = 0 AND v.gold_check = 0) FROM queue q"
    )
    return dict(rows.fetchall())


def test_the_open_items_index_follows_verdicts_undo_change_and_a_rebuilt_queue(world, conn):
    names = sign_in_all(conn, "ana", "bo", "cy")
    rng = random.Random(0)
    for step in range(150):
        name = rng.choice(names)
        action = rng.random()
        if action < 0.6:
            page = leases.lease_next(conn, name, k=2, n=rng.randint(1, 4), now=T0 + step)
            given = [(i.sha256, rng.choice(["no_foreground", "unsure"]), 1.0) for i in page]
            verdicts.submit_verdicts(conn, name, given, k=2, now=T0 + step)
        elif action < 0.8:
            verdicts.undo_last(conn, name, now=T0 + step)
        else:
            mine = verdicts.recent_verdicts(conn, name, limit=3)
            if len(mine):
                verdicts.change_verdict(conn, name, int(mine["verdict_id"].iloc[-1]), "bad_image")
    index = dict(conn.execute("SELECT sha256, live_votes FROM review_items").fetchall())
    assert index == _true_votes(conn) and max(index.values()) == 2
    # a re-mine replaces the queue: the index follows, votes on re-queued items included
    with store.transaction(conn):
        kept = conn.execute("SELECT * FROM queue WHERE rank <= 10").fetchall()
        conn.execute("DELETE FROM queue")
        conn.executemany(
            "INSERT INTO queue(sha256, rank, run_id, top_class, hardness_score, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(r["sha256"], 11 - r["rank"], r["run_id"], r["top_class"], 0.5, "re-mined")
             for r in kept],
        )  # fmt: skip
    index = dict(conn.execute("SELECT sha256, rank FROM review_items").fetchall())
    assert index == {r["sha256"]: 11 - r["rank"] for r in kept}
    votes = dict(conn.execute("SELECT sha256, live_votes FROM review_items").fetchall())
    assert votes == _true_votes(conn)


def _team_member(db, name, rounds, k, out):
    """One annotator process: lease a page, wait, submit it (some pages late); report results."""
    rng = random.Random(name)
    handed, recorded = [], []
    with store.connect(db) as conn:
        annotators.sign_in(conn, name)
        for _ in range(rounds):
            page = leases.lease_next(conn, name, k=k, n=rng.randint(1, 3), lease_seconds=0.05)
            if not page:
                break
            handed += [i.sha256 for i in page]
            if rng.random() < 0.3:  # a page left open past its lease
                import time

                time.sleep(0.06)
            result = verdicts.submit_verdicts(
                conn, name, [(i.sha256, "no_foreground", 0.1) for i in page], k=k
            )
            recorded += [sha for sha, _ in result.recorded]
    out.put((name, handed, recorded))


@pytest.mark.parametrize("k", [1, 2])
def test_a_team_with_expiring_leases_never_over_counts(tmp_path, k):
    world = build_review_store(tmp_path, 40)
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    out = context.Queue()
    workers = [
        context.Process(target=_team_member, args=(world.db, f"p{i}", 60, k, out)) for i in range(4)
    ]
    for worker in workers:
        worker.start()
    reports = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    with store.connect(world.db) as conn:
        live = verdicts.live_verdicts(conn)
    # every verdict an annotator was told was recorded is in the store, once
    told = sorted((name, sha) for name, _, recorded in reports for sha in recorded)
    assert sorted(zip(live["annotator"], live["sha256"])) == told
    assert live.groupby("sha256").size().max() <= k  # no item over-counted
    assert not live.duplicated(["sha256", "annotator"]).any()
    assert set(live["sha256"]) == set(world.shas)  # the team finished the queue
