"""The lead's data: held items and idle annotators, agreement with the consensus, the
disagreement queue and adjudication, gold items, and progress from this round's human verdicts."""

from __future__ import annotations

import pytest

from curate import store
from curate.review import (
    adjudication,
    agreement,
    annotators,
    gold,
    leases,
    progress,
    team,
    verdicts,
)
from tests.curate.review_fixtures import build_review_store

T0 = 1_700_000_000.0
N, C, U = "no_foreground", "contains_foreground", "unsure"


@pytest.fixture
def world(tmp_path):
    return build_review_store(tmp_path, 12)


def _vote(conn, world, plan, k=3, source="app"):
    """plan: {item index: [(annotator, verdict), ...]}, recorded without leases."""
    for i, given in plan.items():
        for name, verdict in given:
            annotators.sign_in(conn, name)
            assert verdicts.record_verdict(conn, name, world.shas[i], verdict, 2.0, source, k=k)


def test_held_items_and_idle_annotators(world, conn):
    ana, bo, _ = (annotators.sign_in(conn, n) for n in ("ana", "bo", "cy"))
    leases.lease_next(conn, ana, n=2, now=T0)
    leases.lease_next(conn, bo, n=1, now=T0)
    verdicts.record_verdict(conn, bo, world.shas[2], N, 1.0, now=T0 + 200)
    leases.lease_next(conn, bo, n=1, now=T0 + 200)
    held = team.held_items(conn, now=T0 + 250)
    assert held[["annotator", "sha256", "queue_rank"]].values.tolist() == [
        ["ana", world.shas[0], 1], ["ana", world.shas[1], 2], ["bo", world.shas[3], 4],
    ]  # fmt: skip
    assert held["held_seconds"].tolist() == [250.0, 250.0, 50.0]
    status = team.annotator_status(conn, now=T0 + 250, idle_after=120).set_index("annotator")
    assert status["status"].to_dict() == {"ana": "idle", "bo": "working", "cy": "away"}
    assert status["held"].to_dict() == {"ana": 2, "bo": 1, "cy": 0}


def test_agreement_with_the_consensus_per_annotator(world, conn):
    _vote(conn, world, {
        0: [("ana", N), ("bo", N), ("cy", N)],
        1: [("ana", N), ("bo", C), ("cy", C)],
        2: [("ana", N), ("bo", N), ("cy", C)],
        3: [("ana", C), ("bo", N)],
    })  # fmt: skip
    table = agreement.annotator_agreement(conn).set_index("annotator")
    # leave-one-out: each is compared with what the others say, where they do not tie.
    # ana: item 0 yes, 1 no (others C, C), 2 others tie, 3 no (bo N) -> 1 of 3
    # bo: item 0 yes, 1 and 2 others tie, 3 no (ana C) -> 1 of 2; cy: 0 yes, 2 no -> 1 of 2
    assert table["compared"].to_dict() == {"ana": 3, "bo": 2, "cy": 2}
    assert table["agreed"].to_dict() == {"ana": 1, "bo": 1, "cy": 1}
    assert table.loc["ana", "agreement"] == pytest.approx(1 / 3)
    # the lead's adjudication is the consensus where there is one: item 3 is C, and item 2,
    # where the others tie, is now compared for ana and bo too
    lead = annotators.sign_in_lead(conn, "Lee")
    adjudication.adjudicate(conn, lead, world.shas[3], C)
    adjudication.adjudicate(conn, lead, world.shas[2], N)
    table = agreement.annotator_agreement(conn).set_index("annotator")
    assert table["compared"].to_dict() == {"ana": 4, "bo": 3, "cy": 2}
    assert table["agreed"].to_dict() == {"ana": 3, "bo": 2, "cy": 1}


def test_disagreement_queue_and_adjudication(world, conn):
    _vote(conn, world, {
        0: [("ana", N), ("bo", N)],
        1: [("ana", N), ("bo", C)],
        2: [("ana", N), ("bo", N), ("cy", C)],
        3: [("ana", U)],
    })  # fmt: skip
    queue = adjudication.disagreements(conn)
    assert queue["sha256"].tolist() == [world.shas[1], world.shas[2], world.shas[3]]  # tie first
    assert queue.iloc[0]["votes"] == "ana: no_foreground; bo: contains_foreground"
    assert queue.iloc[0]["top_class"] == world.top_classes[1] and queue.iloc[0]["queue_rank"] == 2
    assert adjudication.disagreements(conn, include_unsure=False)["sha256"].tolist() == [
        world.shas[1], world.shas[2],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not a lead"):
        adjudication.adjudicate(conn, "ana", world.shas[1], N)
    lead = annotators.sign_in_lead(conn, "Lee")
    first = adjudication.adjudicate(conn, lead, world.shas[1], C)
    second = adjudication.adjudicate(conn, lead, world.shas[1], N)  # the lead changes their mind
    rows = conn.execute(
        "SELECT verdict_id, annotator, verdict, source, undone, queue_rank FROM verdicts "
        "WHERE source = 'lead' ORDER BY verdict_id"
    ).fetchall()
    assert [tuple(r) for r in rows] == [
        (first, "lee", C, "lead", 1, 2), (second, "lee", N, "lead", 0, 2),
    ]  # fmt: skip
    queue = adjudication.disagreements(conn)
    assert queue["sha256"].tolist()[-1] == world.shas[1]  # decided items go last
    assert queue.iloc[-1][["adjudicated", "adjudicated_by"]].tolist() == [N, "lee"]
    assert (
        world.shas[1]
        not in adjudication.disagreements(conn, include_adjudicated=False)["sha256"].tolist()
    )
    with pytest.raises(ValueError, match="no votes"):
        adjudication.adjudicate(conn, lead, world.shas[9], N)


def test_gold_from_the_lead_and_accuracy_per_annotator(world, conn):
    _vote(conn, world, {
        0: [("ana", N), ("bo", C)],
        1: [("ana", C), ("bo", C)],
        2: [("ana", N), ("bo", N)],
    })  # fmt: skip
    lead = annotators.sign_in_lead(conn, "lee")
    with pytest.raises(ValueError, match="adjudicate it before"):
        gold.mark_gold(conn, lead, world.shas[0])
    adjudication.adjudicate(conn, lead, world.shas[0], N)
    assert gold.mark_gold(conn, lead, world.shas[0]) == N
    gold.add_gold(conn, {world.shas[1]: C, world.shas[2]: C}, source="truth")
    table = gold.gold_accuracy(conn).set_index("annotator")
    # ana: 0 right, 1 right, 2 wrong; bo: 0 wrong, 1 right, 2 wrong
    assert table["gold_judged"].to_dict() == {"ana": 3, "bo": 3}
    assert table["gold_correct"].to_dict() == {"ana": 2, "bo": 1}
    assert table.loc["ana", "gold_accuracy"] == pytest.approx(2 / 3)
    report = team.annotator_report(conn).set_index("annotator")
    assert report.loc["bo", "gold_accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="not in the store"):
        gold.add_gold(conn, {"0" * 64: N})


def test_a_share_of_each_annotators_items_are_gold_checks_that_are_not_votes(world, conn):
    ana, bo = (annotators.sign_in(conn, n) for n in ("ana", "bo"))
    # items 10 and 11 are judged and gold: as gold checks they can be shown again
    _vote(conn, world, {10: [("bo", N)], 11: [("bo", C)]}, k=1)
    gold.add_gold(conn, {world.shas[10]: N, world.shas[11]: C})
    page = leases.lease_next(conn, ana, n=8, gold_share=0.25, now=T0)
    checks = [i for i in page if i.gold_check]
    assert len(page) == 8 and len(checks) == 2
    assert {i.sha256 for i in checks} == {world.shas[10], world.shas[11]}
    assert [i.sha256 for i in page if not i.gold_check] == world.shas[:6]
    assert checks[0].rank in (11, 12) and checks[0].reason  # shown with the facts it was judged on
    votes_before = dict(conn.execute("SELECT sha256, live_votes FROM review_items").fetchall())
    given = [(i.sha256, C, 1.0) for i in page]  # wrong on item 10, right on item 11
    result = verdicts.submit_verdicts(conn, ana, given, now=T0 + 10)
    assert not result.refused
    votes_after = dict(conn.execute("SELECT sha256, live_votes FROM review_items").fetchall())
    assert votes_after[world.shas[10]] == votes_before[world.shas[10]] == 1  # not a vote
    flags = dict(
        conn.execute("SELECT sha256, gold_check FROM verdicts WHERE annotator = 'ana'").fetchall()
    )
    assert flags[world.shas[10]] == flags[world.shas[11]] == 1 and flags[world.shas[0]] == 0
    accuracy = gold.gold_accuracy(conn).set_index("annotator")
    assert accuracy.loc["ana", "gold_correct"] == 1 and accuracy.loc["ana", "gold_judged"] == 2
    # gold checks are not in the agreement or the disagreement queue
    assert agreement.agreement_summary(conn)["items"] == 0
    # no gold left that ana has not judged: the next page is plain queue items
    page = leases.lease_next(conn, ana, n=4, gold_share=0.25, now=T0 + 20)
    assert not any(i.gold_check for i in page)
    leases.lease_next(conn, bo, n=1, now=T0 + 20)


def test_progress_and_eta_count_this_rounds_human_verdicts_only(world, conn):
    # an earlier round: simulated verdicts, slow, then the queue is rebuilt (a re-mine)
    _vote(conn, world, {i: [("sim-ana", N)] for i in range(4)}, k=1, source="simulated")
    with store.transaction(conn):
        conn.execute("UPDATE verdicts SET seconds = 60.0")
        new_run = store.start_run(conn, "mine", {"round": 2}, "d" * 64, tool_version="test")
        conn.execute("UPDATE queue SET run_id = ?", (new_run,))
        conn.execute("DELETE FROM queue WHERE rank <= 4")  # reviewed images leave the queue
    summary = progress.progress_summary(conn, k=1, now=T0)
    assert summary["round_run_id"] == new_run and summary["queue_items"] == 8
    assert summary["median_seconds"] is None and summary["eta_seconds"] is None
    # this round: people in the app, plus simulated verdicts that must not skew the speed
    ana = annotators.sign_in(conn, "ana")
    for i, seconds in zip((4, 5, 6), (2.0, 3.0, 4.0)):
        verdicts.record_verdict(conn, ana, world.shas[i], N, seconds, now=T0)
    sim = annotators.sign_in(conn, "sim-ana")
    verdicts.record_verdict(conn, sim, world.shas[7], N, 90.0, source="simulated", now=T0)
    summary = progress.progress_summary(conn, k=1, now=T0 + 1)
    assert summary["done_items"] == 4 and summary["remaining_items"] == 4
    assert summary["median_seconds"] == 3.0 and summary["active_annotators"] == 1
    assert summary["eta_seconds"] == pytest.approx(4 * 3.0)
    assert summary["round_human_verdicts"] == 3
    frame = progress.progress_frame(conn).set_index("annotator")
    assert frame.loc["sim-ana", "verdicts"] == 5 and frame.loc["sim-ana", "round_verdicts"] == 1
    assert frame.loc["ana", "median_seconds"] == 3.0
