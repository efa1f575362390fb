"""The review app's logic with Streamlit's AppTest against a temporary store."""

from __future__ import annotations

import pytest

from app.annotate import hotkeys
from curate import store
from curate.review import annotators, verdicts
from tests.app.app_helpers import (
    button,
    grid_shas,
    open_app,
    press_verdict,
    shown_sha,
    sign_in,
    submit_grid,
    verdicts_by_sha,
)
from tests.curate.review_fixtures import build_review_store
from wood_train.manifest.validate import validate_manifest


@pytest.fixture
def world(tmp_path):
    return build_review_store(tmp_path, 30)


def test_sign_in_rejects_a_bad_name_then_accepts(monkeypatch, world):
    at = open_app(monkeypatch, world.db)
    sign_in(at, "  ")
    assert "user" not in at.session_state
    assert "annotator name" in at.error[0].value
    sign_in(at, "ana")
    assert at.session_state["user"].name == "ana"
    assert at.radio[0].value == "Grid"  # the grid is the main mode


def test_password_is_required_when_configured(monkeypatch, world):
    monkeypatch.setenv("TEAM_PW", "s3cret")
    at = open_app(monkeypatch, world.db, "--password-env", "TEAM_PW", "--host", "0.0.0.0")
    sign_in(at, "ana", "guess")
    assert "user" not in at.session_state
    assert at.error[0].value == "Wrong password."
    sign_in(at, "ana", "s3cret")
    assert at.session_state["user"].name == "ana"


def test_app_refuses_an_open_address_without_password(monkeypatch, world):
    at = open_app(monkeypatch, world.db, "--host", "0.0.0.0")
    assert "without a password" in at.error[0].value
    assert not at.text_input  # no sign-in form


def test_grid_page_defaults_to_no_foreground_and_flips_what_was_checked(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    page = grid_shas(at)
    assert page == world.shas[:12]
    at.checkbox(key=f"gridcb__{page[1]}").check()
    at.checkbox(key=f"gridcb__{page[4]}").check()
    submit_grid(at)
    expected = {sha: "no_foreground" for sha in page}
    expected[page[1]] = expected[page[4]] = "contains_foreground"
    assert verdicts_by_sha(world.db) == expected
    with store.connect(world.db) as conn:
        seconds = verdicts.live_verdicts(conn)["seconds"]
    assert seconds.notna().all() and (seconds >= 0).all()
    assert grid_shas(at) == world.shas[12:24]  # the next page, nothing of the first
    assert not any(c.value for c in at.checkbox)


def test_an_expired_page_keeps_what_still_counts_and_says_so(monkeypatch, world):
    """ana's leases ran out and bo judged one of her tiles meanwhile: her submit records the
    other 11, refuses that one with the app's message, and the next page has fresh items."""
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    page = grid_shas(at)
    with store.connect(world.db) as conn:
        conn.execute("UPDATE leases SET expires_at = 0 WHERE annotator = 'ana'")
        annotators.sign_in(conn, "bo")
        verdicts.record_verdict(conn, "bo", page[0], "contains_foreground", 3.0)
    submit_grid(at)
    with store.connect(world.db) as conn:
        live = verdicts.live_verdicts(conn)
    by_annotator = {
        (a, s): v for a, s, v in zip(live["annotator"], live["sha256"], live["verdict"])
    }
    assert by_annotator == {("bo", page[0]): "contains_foreground",
                            **{("ana", sha): "no_foreground" for sha in page[1:]}}  # fmt: skip
    (error,) = [e.value for e in at.error]
    assert error.startswith("This page expired: 1 image(s) were not recorded")
    assert "your other 11 verdict(s) are saved" in error
    assert set(grid_shas(at)).isdisjoint(page)


def test_single_view_records_the_shown_item_then_undo_brings_it_back(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    at.radio[0].set_value("Single").run()
    first = shown_sha(at)
    assert first == world.shas[0]
    press_verdict(at, "contains_foreground", first)
    assert verdicts_by_sha(world.db) == {first: "contains_foreground"}
    assert shown_sha(at) == world.shas[1]
    press_verdict(at, "unsure", world.shas[1])
    at.button(key=hotkeys.UNDO_WIDGET).click().run()
    assert verdicts_by_sha(world.db) == {first: "contains_foreground"}
    assert shown_sha(at) == world.shas[1]  # the undone image is shown again
    press_verdict(at, "bad_image", world.shas[1])
    assert verdicts_by_sha(world.db) == {first: "contains_foreground", world.shas[1]: "bad_image"}
    assert "2 verdicts by you" in at.sidebar.caption[0].value


def test_a_press_lands_on_the_item_it_was_drawn_for(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    at.radio[0].set_value("Single").run()
    first = shown_sha(at)
    # the same annotator judged it meanwhile (another tab): the press is not applied twice,
    # and it is never applied to the next item, which ana has not seen yet
    with store.connect(world.db) as conn:
        verdicts.record_verdict(conn, "ana", first, "no_foreground", 1.0)
    press_verdict(at, "contains_foreground", first)
    assert verdicts_by_sha(world.db) == {first: "no_foreground"}
    assert shown_sha(at) == world.shas[1]


def test_a_new_session_resumes_from_the_store(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    at.radio[0].set_value("Single").run()
    press_verdict(at, "no_foreground", shown_sha(at))
    held = shown_sha(at)
    # a server restart: a fresh session, signed in again, shows the same held image
    again = sign_in(open_app(monkeypatch, world.db), "ana")
    again.radio[0].set_value("Single").run()
    assert shown_sha(again) == held
    assert verdicts_by_sha(world.db) == {world.shas[0]: "no_foreground"}


def test_two_annotators_see_different_items(monkeypatch, world):
    ana = sign_in(open_app(monkeypatch, world.db, "--grid-size", "5"), "ana")
    bo = sign_in(open_app(monkeypatch, world.db, "--grid-size", "5"), "bo")
    assert grid_shas(ana) == world.shas[:5]
    assert grid_shas(bo) == world.shas[5:10]
    submit_grid(bo)
    ana.run()  # ana's page is unchanged by bo's work
    assert grid_shas(ana) == world.shas[:5]
    assert grid_shas(bo) == world.shas[10:15]


def test_missing_image_file_shows_an_error_and_can_be_marked_bad(monkeypatch, world):
    (world.root / world.relpaths[0]).unlink()
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    at.radio[0].set_value("Single").run()
    assert "Cannot show this image" in at.error[0].value
    press_verdict(at, "bad_image", world.shas[0])
    assert verdicts_by_sha(world.db) == {world.shas[0]: "bad_image"}


def test_progress_view_counts_and_agreement(monkeypatch, world):
    for name in ("ana", "bo"):
        with store.connect(world.db) as conn:
            annotators.sign_in(conn, name)
    for i, (a, b) in enumerate(zip("nnnc", "nncc")):
        label = {"n": "no_foreground", "c": "contains_foreground"}
        with store.connect(world.db) as conn:
            verdicts.record_verdict(conn, "ana", world.shas[i], label[a], 2.0, k=2)
            verdicts.record_verdict(conn, "bo", world.shas[i], label[b], 4.0, k=2)
    at = sign_in(open_app(monkeypatch, world.db, "--overlap", "2"), "ana")
    at.radio[0].set_value("Progress").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Done"] == "4 / 30" and metrics["Remaining"] == "26"
    assert metrics["Median s / verdict"] == "3.0"
    table = at.table[0].value
    assert table.loc["ana", "verdicts"] == 4 and table.loc["bo", "median_seconds"] == "4.0"
    text = " ".join(m.value for m in at.markdown)
    assert "Cohen's kappa **0.500** over 4 images" in text


def test_export_button_writes_a_valid_manifest(monkeypatch, world, tmp_path):
    exports = tmp_path / "exports"
    at = sign_in(open_app(monkeypatch, world.db, "--export-dir", str(exports)), "ana")
    at.checkbox(key=f"gridcb__{world.shas[3]}").check()
    submit_grid(at)
    at.sidebar.text_input[0].input("first")
    button(at, "Export").click().run()
    assert "Exported 12 images (11 no foreground)" in at.sidebar.success[0].value
    loaded = validate_manifest(exports / "first")
    assert dict(zip(loaded.rows["sha256"], loaded.rows["verdict"])) == verdicts_by_sha(world.db)
    # again without "replace": refused, the first export kept
    button(at, "Export").click().run()
    assert "--force" in at.sidebar.error[0].value
    at.sidebar.text_input[0].input("../escape")
    button(at, "Export").click().run()
    assert "export name" in at.sidebar.error[0].value
    assert not (tmp_path / "escape").exists()


def test_a_verdict_that_cannot_be_saved_says_so(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    at.radio[0].set_value("Single").run()
    shown = shown_sha(at)
    with store.connect(world.db) as conn:  # the queue was rebuilt without this image meanwhile
        conn.execute("DELETE FROM leases WHERE sha256 = ?", (shown,))
        conn.execute("DELETE FROM queue WHERE sha256 = ?", (shown,))
    press_verdict(at, "no_foreground", shown)
    error = at.error[0].value
    assert error.startswith("This page expired") and "not in the review queue" in error
    assert verdicts_by_sha(world.db) == {}
    assert shown_sha(at) == world.shas[1]
