"""The lead's views with AppTest, on stores whose answers are planted: Team (agreement with the
consensus, speed, gold accuracy, held items, idle annotators), Disagreements (adjudicate, mark
gold, the export uses it), Progress (this round's human verdicts only), Export (the report's
warnings, as ``hardood export`` prints them) and ``--gold-share``."""

from __future__ import annotations

import re
import time

import pytest

from app.annotate import hotkeys
from app.annotate.lead import GOLD_BUTTON_PREFIX
from curate import store
from curate.export.build import build_export
from curate.review import annotators, gold, leases, verdicts
from tests.app.app_helpers import button, grid_shas, open_app, sign_in, submit_grid
from tests.curate.review_fixtures import build_review_store
from wood_train.manifest.validate import validate_manifest

N, C, U = "no_foreground", "contains_foreground", "unsure"
LEAD_ENV, LEAD_PASSWORD = "HARDOOD_TEST_LEAD", "lead-secret"


@pytest.fixture
def world(tmp_path):
    return build_review_store(tmp_path, 30)


def plant_votes(db, plan: dict[int, list[tuple[str, str, float]]], shas, k=2, now=None):
    """plan: {item index: [(annotator, verdict, seconds), ...]}, recorded as app verdicts."""
    with store.connect(db) as conn:
        for i, given in plan.items():
            for name, verdict, seconds in given:
                annotators.sign_in(conn, name)
                verdicts.record_verdict(conn, name, shas[i], verdict, seconds, now=now, k=k)


def open_lead(monkeypatch, db, *args: str):
    monkeypatch.setenv(LEAD_ENV, LEAD_PASSWORD)
    at = open_app(monkeypatch, db, "--lead-password-env", LEAD_ENV, *args)
    return sign_in(at, "Lee", LEAD_PASSWORD)


def texts(elements) -> list[str]:
    """The elements' text as the reader sees it (Markdown escapes undone)."""
    return [re.sub(r"\\(.)", r"\1", e.value) for e in elements]


def test_team_shows_agreement_speed_gold_held_items_and_idle_annotators(monkeypatch, world):
    t = time.time()
    plant_votes(world.db, {
        0: [("ana", N, 2.0), ("bo", N, 4.0)],
        1: [("ana", N, 2.0), ("bo", C, 4.0)],
        2: [("ana", C, 2.0), ("bo", C, 4.0)],
        3: [("ana", N, 2.0), ("bo", N, 4.0)],
        4: [("ana", N, 2.0), ("cy", C, 6.0)],
    }, world.shas, now=t - 600)  # fmt: skip
    with store.connect(world.db) as conn:
        gold.add_gold(conn, {world.shas[0]: N, world.shas[1]: C}, source="truth")
        # ana took two items five minutes ago and gave no verdict since: idle; bo works; cy away
        leases.lease_next(conn, "ana", k=2, lease_seconds=3600, n=2, now=t - 300)
        leases.lease_next(conn, "bo", k=2, lease_seconds=3600, n=1, now=t)
    at = open_lead(monkeypatch, world.db, "--overlap", "2")
    assert at.radio(key="view").value == "Team"
    assert texts(at.warning) == [
        "Idle: ana (2 held): holding items without a verdict for over 2 min. Their items go "
        "back to the queue when the leases end."
    ]
    table = at.table[0].value
    assert table["status"].to_dict() == {"ana": "idle", "bo": "working", "cy": "away"}
    assert table["items held"].to_dict() == {"ana": 2, "bo": 1, "cy": 0}
    assert table["median s / verdict"].to_dict() == {"ana": "2.0", "bo": "4.0", "cy": "6.0"}
    assert table["verdicts this round"].to_dict() == {"ana": 5, "bo": 4, "cy": 1}
    # leave-one-out: ana agrees with the other voter on items 0, 2, 3 (not 1, 4); bo on 0, 2, 3
    assert table["agrees with consensus"].to_dict() == {
        "ana": "60% (3 of 5)", "bo": "75% (3 of 4)", "cy": "0% (0 of 1)",
    }  # fmt: skip
    # gold: item 0 is no foreground, item 1 contains; ana said N, N; bo said N, C
    assert table["gold accuracy"].to_dict() == {"ana": "50% (1 of 2)", "bo": "100% (2 of 2)",
                                                "cy": ""}  # fmt: skip
    held = at.table[1].value
    assert held["annotator"].tolist() == ["ana", "ana", "bo"]
    assert held["image"].tolist() == ["#6", "#7", "#8"]  # items 0-4 have their two votes
    assert held["sha256"].tolist() == [s[:12] for s in world.shas[5:8]]
    assert held["held for"].tolist()[0] == "5 min" and all(held["until"])
    text = " ".join(m.value for m in at.markdown)
    assert "2 gold image(s) (0 marked by a lead, 2 from known truth)" in text
    assert "Annotators get no gold checks" in text


def test_the_lead_adjudicates_disagreements_marks_gold_and_the_export_uses_it(
    monkeypatch, world, tmp_path
):
    plant_votes(world.db, {
        0: [("ana", N, 2.0), ("bo", C, 2.0)],  # a tie
        1: [("ana", N, 2.0), ("bo", N, 2.0)],
        2: [("ana", U, 2.0), ("bo", N, 2.0)],  # someone unsure
        3: [("ana", C, 2.0), ("bo", C, 2.0)],
    }, world.shas)  # fmt: skip
    exports = tmp_path / "exports"
    at = open_lead(monkeypatch, world.db, "--overlap", "2", "--export-dir", str(exports))
    at.radio(key="view").set_value("Disagreements").run()
    assert "2 image(s) wait for you, 0 adjudicated" in at.caption[0].value

    def shown() -> set[str]:
        keys = [b.key or "" for b in at.button if (b.key or "").startswith("adjudicate__")]
        return {key.rsplit("__", 1)[1] for key in keys}

    assert shown() == {world.shas[0]}  # the tie first
    votes = " ".join(m.value for m in at.markdown)
    assert "ana: **no foreground**" in votes and "bo: **contains foreground**" in votes
    at.button(key=f"{hotkeys.ADJUDICATE_PREFIX}{N}__{world.shas[0]}").click().run()
    assert not at.exception and shown() == {world.shas[2]}
    assert "1 image(s) wait for you, 1 adjudicated" in at.caption[0].value
    with store.connect(world.db) as conn:
        row = conn.execute(
            "SELECT annotator, verdict FROM verdicts WHERE source = 'lead' AND undone = 0"
        ).fetchall()
    assert [tuple(r) for r in row] == [("lee", N)]
    # the last adjudication can be made gold at once (the `g` key clicks this button)
    gold_last = at.button(key=hotkeys.GOLD_WIDGET)
    assert gold_last.label == f"Mark {world.shas[0][:12]} gold (g)"
    gold_last.click().run()
    with store.connect(world.db) as conn:
        items = gold.gold_items(conn)
    assert items[["sha256", "verdict", "source", "marked_by"]].values.tolist() == [
        [world.shas[0], N, "lead", "lee"]
    ]
    assert at.button(key=f"{GOLD_BUTTON_PREFIX}{world.shas[0]}").label == "Unmark gold"
    assert not [b for b in at.button if b.key == hotkeys.GOLD_WIDGET]  # already gold
    at.button(key=f"{hotkeys.ADJUDICATE_PREFIX}{C}__{world.shas[2]}").click().run()
    assert texts(at.success) == ["No disagreement waits for you."] and not shown()
    # unmark and mark again from the list
    at.button(key=f"{GOLD_BUTTON_PREFIX}{world.shas[0]}").click().run()
    with store.connect(world.db) as conn:
        assert gold.gold_items(conn).empty
    at.button(key=f"{GOLD_BUTTON_PREFIX}{world.shas[0]}").click().run()
    # the Team view scores the annotators on the gold item: ana said N (right), bo C (wrong)
    at.radio(key="view").set_value("Team").run()
    table = at.table[0].value
    assert table["gold accuracy"].to_dict() == {"ana": "100% (1 of 1)", "bo": "0% (0 of 1)"}
    # the export takes the lead's verdicts under every policy
    at.radio(key="view").set_value("Export").run()
    at.text_input[0].input("round1")
    button(at, "Export").click().run()
    assert "Exported 4 images" in at.success[0].value
    rows = validate_manifest(exports / "round1").rows.set_index("sha256")
    assert rows.loc[world.shas[0], ["verdict", "adjudicated_verdict"]].tolist() == [N, N]
    assert rows.loc[world.shas[2], ["verdict", "adjudicated_verdict"]].tolist() == [C, C]


def test_export_shows_the_reports_warnings_as_the_command_line_prints_them(
    monkeypatch, world, tmp_path
):
    plant_votes(world.db, {
        0: [("ana", N, 2.0), ("bo", N, 2.0)],
        1: [("ana", N, 2.0), ("bo", C, 2.0)],  # a tie
        2: [("ana", N, 2.0)],  # short of the overlap
        3: [("bo", C, 2.0)],  # short of the overlap
        4: [("ana", N, 2.0), ("bo", U, 2.0)],
    }, world.shas)  # fmt: skip
    exports = tmp_path / "exports"
    at = open_lead(monkeypatch, world.db, "--overlap", "2", "--export-dir", str(exports))
    at.radio(key="view").set_value("Export").run()
    at.selectbox[0].set_value("unanimous")
    button(at, "Check (writes nothing)").click().run()
    assert texts(at.info) == ["Checked: nothing was written."] and not exports.exists()
    shown = texts(at.warning)
    with store.connect(world.db) as conn:
        _, _, report = build_export(conn, "unanimous", 2)
    assert shown == report.warnings
    assert shown[0] == "1 image(s) end in a tie; unanimous exported them as 1 unsure"
    assert shown[1].startswith("2 image(s) have fewer than 2 vote(s); unanimous exported them")
    assert shown[2] == "1 image(s) are unsure only because someone voted unsure"
    table = at.table[0].value
    assert list(table.index) == ["majority", "unanimous *", "any"]
    assert table.loc["unanimous *", "ties"] == "1 -> 1 unsure"
    assert (
        table.loc["unanimous *", "short (< 2 votes)"]
        == "2 -> 1 contains_foreground, 1 no_foreground"
    )
    # the export writes the folder and shows the same warnings
    at.text_input[0].input("round1")
    button(at, "Export").click().run()
    assert "Exported 5 images" in at.success[0].value and texts(at.warning) == shown
    assert (exports / "round1" / "manifest.csv").is_file()
    button(at, "Export").click().run()  # the folder is there now: refused, nothing lost
    assert "--force" in at.error[0].value
    at.text_input[0].input("../escape")
    button(at, "Export").click().run()
    assert "export name" in at.error[0].value and not (tmp_path / "escape").exists()


def test_the_sidebar_export_of_a_local_app_warns_too(monkeypatch, world, tmp_path):
    plant_votes(world.db, {0: [("ana", N, 2.0)], 1: [("ana", N, 2.0), ("bo", C, 2.0)]},
                world.shas)  # fmt: skip
    exports = tmp_path / "exports"
    at = sign_in(open_app(monkeypatch, world.db, "--overlap", "2", "--export-dir", str(exports)),
                 "ana")  # fmt: skip
    at.sidebar.text_input[0].input("round1")
    button(at, "Export").click().run()
    assert "Exported 2 images" in at.sidebar.success[0].value
    warnings = texts(at.sidebar.warning)
    assert warnings[0] == "1 image(s) end in a tie; majority exported them as 1 unsure"
    assert warnings[1].startswith("1 image(s) have fewer than 2 vote(s)")
    with store.connect(world.db) as conn:  # and `hardood export` measures against that overlap
        assert leases.review_overlap(conn) == 2


def test_progress_counts_this_rounds_human_verdicts_only(monkeypatch, world):
    # an earlier round: slow simulated verdicts, then a re-mine rebuilds the queue
    with store.connect(world.db) as conn:
        annotators.sign_in(conn, "sim")
        for i in range(4):
            verdicts.record_verdict(conn, "sim", world.shas[i], N, 60.0, "simulated", k=1)
        with store.transaction(conn):
            new_run = store.start_run(conn, "mine", {"round": 2}, "d" * 64, tool_version="test")
            conn.execute("UPDATE queue SET run_id = ?", (new_run,))
            conn.execute("DELETE FROM queue WHERE rank <= 4")
        annotators.sign_in(conn, "ana")
        for i, seconds in zip((4, 5, 6), (2.0, 3.0, 4.0)):
            verdicts.record_verdict(conn, "ana", world.shas[i], N, seconds, k=1)
        verdicts.record_verdict(conn, "sim", world.shas[7], N, 90.0, "simulated", k=1)
    at = open_lead(monkeypatch, world.db)
    at.radio(key="view").set_value("Progress").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Median s / verdict"] == "3.0"  # not 60 or 90: people, this round
    assert metrics["Done"] == "4 / 26"
    assert metrics["ETA"] == "1 min"  # 22 verdicts still needed x 3 s / 1 active annotator
    captions = " ".join(c.value for c in at.caption)
    assert f"This round (queue run {new_run}): 3 verdict(s) given in the app" in captions


def test_gold_share_puts_gold_checks_in_each_annotators_page(monkeypatch, world):
    golden = world.shas[20:26]
    with store.connect(world.db) as conn:
        gold.add_gold(conn, {sha: N for sha in golden}, source="truth")
    at = sign_in(open_app(monkeypatch, world.db, "--gold-share", "0.5"), "ana")
    page = grid_shas(at)
    assert set(page) == set(golden) | set(world.shas[:6])
    submit_grid(at)
    with store.connect(world.db) as conn:
        flags = dict(conn.execute("SELECT sha256, gold_check FROM verdicts").fetchall())
        accuracy = gold.gold_accuracy(conn).set_index("annotator")
    assert {sha for sha, is_gold in flags.items() if is_gold} == set(golden)
    assert accuracy.loc["ana", "gold_judged"] == 6 and accuracy.loc["ana", "gold_correct"] == 6
