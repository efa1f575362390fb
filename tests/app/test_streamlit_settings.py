"""The review app's task, settings and safety with AppTest: the class list, guidelines, hidden
scores, the lead's sign-in, the whole-page undo, the server's own dwell check, the CAM beside the
image, the ``--image-root`` allow-list and messages without absolute paths."""

from __future__ import annotations

import html
import re
import time

import pytest
from PIL import Image

from app.annotate import hotkeys
from app.annotate.settings import set_scores_hidden
from curate import store
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
from tests.curate.review_fixtures import CLASSES, build_review_store


@pytest.fixture
def world(tmp_path):
    return build_review_store(tmp_path, 30)


def html_text(at) -> str:
    return html.unescape("\n".join(h.value for h in at.html))


def test_the_class_list_heads_every_view(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    listed = "Foreground classes: " + " · ".join(f"<b>{name}</b>" for name in CLASSES)
    for view in ("Grid", "Single", "Progress"):
        at.radio(key="view").set_value(view).run()
        assert listed in html_text(at), view


def test_guidelines_show_markdown_and_example_images(monkeypatch, world, tmp_path):
    guide = tmp_path / "guide" / "guidelines.md"
    (guide.parent / "examples").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 200, 10)).save(guide.parent / "examples" / "rails.png")
    (tmp_path / "secret.png").write_bytes((guide.parent / "examples" / "rails.png").read_bytes())
    guide.write_text(
        "# Rails alone\nRails without a train are **no foreground**.\n\n"
        "![rails without a train](examples/rails.png)\n\n"
        "![gone](examples/none.png) ![outside](../secret.png)\n",
        encoding="utf-8",
    )
    at = open_app(monkeypatch, world.db, "--guidelines", str(guide))
    for stage in ("sign-in page", "header popover"):
        if stage == "header popover":
            sign_in(at, "ana")
            assert grid_shas(at)
        markdown = "\n".join(m.value for m in at.markdown)
        assert "Rails without a train are **no foreground**" in markdown, stage
        assert "example image `examples/none.png` not shown" in markdown, stage
        assert "example image `../secret.png` not shown" in markdown, stage
        images = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]*)"', html_text(at))
        assert images == ["rails without a train"], stage


def test_hidden_scores_hide_the_models_output_and_the_leads_switch_overrides(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db, "--hide-scores"), "ana")
    labels = [c.label for c in at.checkbox if (c.key or "").startswith(hotkeys.GRID_BOX_PREFIX)]
    assert len(labels) == 12 and all(re.fullmatch(r"\[.\] #\d+", label) for label in labels)
    tiles = html.unescape("\n".join(h.value for h in at.html if "hardood-tile" in h.value))
    assert tiles.count("<img") == 12 and "model's top class" not in tiles
    assert "aeroplane" not in tiles and "scores" not in tiles  # no reason in a tooltip
    assert not [t for t in at.toggle if t.key == hotkeys.CAM_WIDGET]  # no CAM either
    at.radio(key="view").set_value("Single").run()
    right = "\n".join(m.value for m in at.markdown)
    assert "**#1**" in right and "scores" not in right and "0.99" not in right
    with store.connect(world.db) as conn:  # the lead shows them again
        set_scores_hidden(conn, False)
    at.radio(key="view").set_value("Grid").run()
    labels = [c.label for c in at.checkbox if (c.key or "").startswith(hotkeys.GRID_BOX_PREFIX)]
    assert labels[0] == "[1] aeroplane 0.99"
    assert "model's top class aeroplane" in html_text(at)


def test_the_lead_signs_in_with_the_lead_password_and_holds_no_leases(monkeypatch, world):
    monkeypatch.setenv("LEAD_PW", "lead-secret")
    args = ("--lead-password-env", "LEAD_PW")
    at = sign_in(open_app(monkeypatch, world.db, *args), "Boss", "wrong")
    assert at.error[0].value == "Wrong password." and "user" not in at.session_state
    sign_in(at, "Boss", "lead-secret")
    user = at.session_state["user"]
    assert user.name == "boss" and user.is_lead  # one spelling per annotator
    assert list(at.radio(key="view").options) == ["Team", "Disagreements", "Progress", "Export"]
    assert not grid_shas(at)
    with store.connect(world.db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
        assert [r[0] for r in conn.execute("SELECT name FROM leads")] == ["boss"]
    # without a team password, anyone else signs in as an annotator with an empty password
    ana = sign_in(open_app(monkeypatch, world.db, *args), "ana", "")
    assert not ana.session_state["user"].is_lead and grid_shas(ana) == world.shas[:12]
    assert "lead_hide_scores" not in [t.key for t in ana.toggle]  # the switch is the lead's
    # the lead's switch hides the model's scores on the annotators' next page
    at.toggle(key="lead_hide_scores").set_value(True).run()
    ana.run()
    labels = [c.label for c in ana.checkbox if (c.key or "").startswith(hotkeys.GRID_BOX_PREFIX)]
    assert labels[0] == "[1] #1" and not [t for t in ana.toggle if t.key == hotkeys.CAM_WIDGET]
    at.toggle(key="lead_hide_scores").set_value(False).run()
    ana.run()
    labels = [c.label for c in ana.checkbox if (c.key or "").startswith(hotkeys.GRID_BOX_PREFIX)]
    assert labels[0] == "[1] aeroplane 0.99"


def test_undo_brings_back_the_whole_page_with_every_flip(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    page = grid_shas(at)
    for i in (1, 4):
        at.checkbox(key=f"{hotkeys.GRID_BOX_PREFIX}{page[i]}").check()
    submit_grid(at)
    assert grid_shas(at) == world.shas[12:24]
    at.button(key=hotkeys.UNDO_WIDGET).click().run()
    assert grid_shas(at) == page
    flips = {
        c.key.removeprefix(hotkeys.GRID_BOX_PREFIX): c.value
        for c in at.checkbox
        if (c.key or "").startswith(hotkeys.GRID_BOX_PREFIX)
    }
    assert [flips[sha] for sha in page] == [i in (1, 4) for i in range(12)]
    assert verdicts_by_sha(world.db) == {}
    with store.connect(world.db) as conn:  # the old verdicts are kept, marked undone
        assert conn.execute("SELECT COUNT(*) FROM verdicts WHERE undone = 1").fetchone()[0] == 12
    at.checkbox(key=f"{hotkeys.GRID_BOX_PREFIX}{page[4]}").uncheck()
    submit_grid(at)
    expected = dict.fromkeys(page, "no_foreground")
    expected[page[1]] = "contains_foreground"
    assert verdicts_by_sha(world.db) == expected


def test_the_server_refuses_a_page_submitted_within_the_dwell(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db, "--dwell-seconds", "0.8"), "ana")
    page = grid_shas(at)
    submit_grid(at)
    assert verdicts_by_sha(world.db) == {}
    assert "Not submitted" in at.toast[0].value and grid_shas(at) == page
    time.sleep(0.8)
    submit_grid(at)
    assert verdicts_by_sha(world.db) == dict.fromkeys(page, "no_foreground")
    at.radio(key="view").set_value("Single").run()  # "n" waits as well; "c" does not
    shown = shown_sha(at)
    press_verdict(at, "no_foreground", shown)
    assert shown not in verdicts_by_sha(world.db)
    press_verdict(at, "contains_foreground", shown)
    assert verdicts_by_sha(world.db)[shown] == "contains_foreground"


def test_the_cam_sits_beside_the_image_with_an_opacity_control_and_a_legend(monkeypatch, world):
    at = sign_in(open_app(monkeypatch, world.db), "ana")
    at.radio(key="view").set_value("Single").run()
    at.toggle(key=hotkeys.CAM_WIDGET).set_value(True).run()
    item = next(h.value for h in at.html if "hardood-single" in h.value)
    sources = re.findall(r'src="(data:image/[^"]+)"', item)
    assert len(sources) == 2 and 'alt="CAM of aeroplane over #1"' in item
    assert "high activation of <b>aeroplane</b>" in item and "linear-gradient" in item
    at.slider(key="cam_opacity").set_value(0.9).run()
    item = next(h.value for h in at.html if "hardood-single" in h.value)
    again = re.findall(r'src="(data:image/[^"]+)"', item)
    assert again[0] == sources[0] and again[1] != sources[1]  # only the CAM changed


def test_image_root_allow_list(monkeypatch, world, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    at = sign_in(open_app(monkeypatch, world.db, "--image-root", str(elsewhere)), "ana")
    at.radio(key="view").set_value("Single").run()
    assert "outside the folders this app may show" in at.error[0].value
    assert "data:image" not in html_text(at)
    at = sign_in(open_app(monkeypatch, world.db, "--image-root", str(world.root.parent)), "bo")
    at.radio(key="view").set_value("Single").run()
    assert not at.error and "data:image/" in html_text(at)


def test_messages_for_annotators_never_hold_an_absolute_path(monkeypatch, world, tmp_path):
    (world.root / world.relpaths[0]).unlink()
    changed = world.root / world.relpaths[1]
    changed.write_bytes(changed.read_bytes() + b"\0")
    exports = tmp_path / "exports"
    at = sign_in(open_app(monkeypatch, world.db, "--export-dir", str(exports)), "ana")
    shown = [m for m in re.findall(r"Cannot show this image: [^<]*", html_text(at))]
    assert len(shown) == 2
    at.radio(key="view").set_value("Single").run()
    press_verdict(at, "bad_image", world.shas[0])
    messages = [*shown, at.error[0].value]
    assert "changed on disk" in at.error[0].value and "is missing" in shown[0]
    at.sidebar.text_input[0].input("round1")
    button(at, "Export").click().run()
    button(at, "Export").click().run()  # the folder exists now
    messages.append(at.sidebar.error[0].value)
    for message in messages:
        assert str(tmp_path) not in message and not re.search(r"(^|\s)/\w", message), message
