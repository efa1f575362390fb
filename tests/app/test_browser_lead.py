"""The lead in a real browser (Debian's chromium through Playwright): signs in with the lead's
password, adjudicates a 1-1 tie with a key, makes it gold with another, and exports; the export
page warns about the image short of the overlap and the manifest carries the lead's verdict."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from curate import store
from curate.export.build import OOD_LIST_NAME
from curate.review import annotators, gold, verdicts
from tests.app.browser_helpers import CHROMIUM, choose_view, launch_chromium, serve, wait_idle
from tests.curate.review_fixtures import build_review_store
from wood_train.manifest.validate import validate_manifest

LEAD_ENV, LEAD_PASSWORD = "HARDOOD_TEST_LEAD", "lead-secret"
N, C = "no_foreground", "contains_foreground"


def wait_for(check, timeout: float = 30.0):
    """Poll ``check()`` until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out waiting for the store"
        time.sleep(0.2)
    return found


def lead_verdicts(db: Path) -> list[tuple[str, str]]:
    with store.connect(db) as conn:
        rows = conn.execute(
            "SELECT sha256, verdict FROM verdicts WHERE source = 'lead' AND undone = 0"
        ).fetchall()
    return [tuple(r) for r in rows]


def test_the_lead_adjudicates_a_tie_by_key_marks_it_gold_and_exports(tmp_path, monkeypatch):
    assert Path(CHROMIUM).exists(), "browser tests need Debian's chromium: apt-get install chromium"
    world = build_review_store(tmp_path / "w", 20)
    tie, agreed, short = world.shas[0], world.shas[1], world.shas[2]
    with store.connect(world.db) as conn:
        for name in ("ana", "bo"):
            annotators.sign_in(conn, name)
        for sha, given in {tie: [("ana", N), ("bo", C)], agreed: [("ana", C), ("bo", C)],
                           short: [("ana", N)]}.items():  # fmt: skip
            for name, verdict in given:
                verdicts.record_verdict(conn, name, sha, verdict, 2.0, k=2)
    monkeypatch.setenv(LEAD_ENV, LEAD_PASSWORD)  # the server inherits it
    exports = tmp_path / "exports"
    config = dict(export_dir=exports, overlap=2, lead_password_env=LEAD_ENV, dwell_seconds=0.2)
    with serve(world.db, tmp_path / "server.log", **config) as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(url)
        page.get_by_label("Your name").fill("Lee")
        page.get_by_role("textbox", name="Password").fill(LEAD_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.locator('[data-testid="stSidebar"]').get_by_text("Disagreements").wait_for()
        wait_idle(page)
        choose_view(page, "Disagreements")
        page.locator(f'[class*="st-key-adjudicate__no_foreground__{tie}"] button').wait_for()
        assert page.get_by_text("1 image(s) wait for you, 0 adjudicated").is_visible()
        wait_idle(page)
        page.keyboard.press("n")  # adjudicate the tie: no foreground
        assert wait_for(lambda: lead_verdicts(world.db)) == [(tie, N)]
        page.get_by_role("button", name=f"Mark {tie[:12]} gold (g)").wait_for()
        wait_idle(page)
        page.keyboard.press("g")  # and make it gold
        with store.connect(world.db) as conn:
            items = wait_for(lambda: gold.gold_items(conn).values.tolist() or None)
        assert [(r[0], r[1], r[2]) for r in items] == [(tie, N, "lead")]
        page.get_by_text("No disagreement waits for you.").wait_for()
        choose_view(page, "Export")
        name = page.get_by_role("textbox", name="Name")
        name.wait_for()
        name.fill("round1")
        page.get_by_role("button", name="Export", exact=True).click()
        page.get_by_text("Exported 3 images").wait_for()
        warning = "1 image(s) have fewer than 2 vote(s); majority exported them from the votes"
        page.get_by_text(warning).wait_for()
        browser.close()
    rows = validate_manifest(exports / "round1").rows.set_index("sha256")
    assert rows.loc[tie, ["verdict", "adjudicated_verdict"]].tolist() == [N, N]
    assert rows.loc[short, "verdict"] == N and rows.loc[agreed, "verdict"] == C
    listed = (exports / "round1" / OOD_LIST_NAME).read_text().split()
    assert sorted(listed) == sorted(rows.loc[[tie, short], "path"])
