"""The review app end to end in a real browser (Debian's chromium through Playwright).

One annotator labels 20 images with the keyboard in the single view and 24 in the grid, undoes
one image and one whole page, exports from the app, and the manifest holds exactly those
verdicts. Two annotators working at once never see the same image.
"""

from __future__ import annotations

from curate import store
from curate.export.build import OOD_LIST_NAME
from curate.review import verdicts
from tests.app.browser_helpers import (
    choose_view,
    serve,
    sign_in,
    wait_grid,
    wait_guards,
    wait_idle,
    wait_single,
)
from tests.curate.review_fixtures import build_review_store
from wood_train.manifest.validate import validate_manifest

SINGLE_PLAN = "ncubnnccnubnnnccbunn"  # 20 key presses, one per image
# thumbnails flipped on grid pages 1 and 2, by key or (as "click") by clicking the thumbnail
GRID_FLIPS = [["2", "7", "="], ["1", "click 0"]]
KEY_VERDICT = {"n": "no_foreground", "c": "contains_foreground", "u": "unsure", "b": "bad_image"}
GRID_KEYS = "1234567890-="
DWELL = 0.2  # short, so the walk through 44 images stays quick; the guards have their own tests


def checked_tiles(page) -> set[int]:
    """Indices of the grid tiles whose checkbox is checked."""
    return set(
        page.evaluate(
            """() => Array.from(document.querySelectorAll('[class*="st-key-gridcell_"]'))
              .filter((c) => c.querySelector('input[type="checkbox"]:checked'))
              .map((c) => Number(Array.from(c.classList).find((k) => k.startsWith('st-key-gridcell_'))
                .slice('st-key-gridcell_'.length)))"""
        )
    )


def test_keyboard_labelling_undo_and_export_round_trip(browser, tmp_path):
    world = build_review_store(tmp_path / "w", 60)
    exports = tmp_path / "exports"
    planned: dict[str, str] = {}
    with serve(world.db, tmp_path / "server.log", export_dir=exports, dwell_seconds=DWELL) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        # shortcut letters typed into a text field stay text
        page.get_by_label("Your name").click()
        page.keyboard.type("nancy cubz")
        page.keyboard.press("Enter")
        page.wait_for_selector('[class*="st-key-gridsubmit__"]')
        choose_view(page, "Single")
        shown = wait_single(page)
        for key in SINGLE_PLAN:
            planned[shown] = KEY_VERDICT[key]
            wait_guards(page)
            page.keyboard.press(key)
            shown = wait_single(page, old=shown)
        # undo brings the last image back; it is then judged again, differently
        last = list(planned)[-1]
        page.keyboard.press("z")
        assert wait_single(page, old=shown) == last
        wait_guards(page)
        page.keyboard.press("c")
        wait_single(page, old=last)
        planned[last] = "contains_foreground"

        choose_view(page, "Grid")
        cells = wait_grid(page)
        for flips in GRID_FLIPS:
            assert len(cells) == 12 and not set(cells) & set(planned)
            for key in flips:
                if key.startswith("click "):
                    cell = GRID_KEYS.index(key.removeprefix("click "))
                    page.locator(f".st-key-gridcell_{cell} img").click()
                else:
                    page.keyboard.press(key)
            flipped = {GRID_KEYS.index(key.removeprefix("click ")) for key in flips}
            for i, sha in enumerate(cells):
                planned[sha] = "contains_foreground" if i in flipped else "no_foreground"
            assert checked_tiles(page) == flipped  # the keys flipped exactly those thumbnails
            wait_guards(page)
            page.keyboard.press("Enter")
            submitted, cells = cells, wait_grid(page, old=cells)
        # undo brings the whole last page back, every flip as it was submitted
        page.keyboard.press("z")
        assert wait_grid(page, old=cells) == submitted
        assert checked_tiles(page) == flipped
        wait_guards(page)
        page.keyboard.press("1")  # change one verdict on the page brought back, then resubmit
        planned[submitted[0]] = "no_foreground"
        page.keyboard.press("Enter")
        wait_grid(page, old=submitted)

        sidebar = page.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Export manifest").click()
        name = sidebar.get_by_label("Name", exact=True)
        name.fill("browser_run")
        name.press("Enter")  # Enter in the name field exports nothing: the form has a button
        name.press("Escape")  # and Escape leaves the field, so keys are shortcuts again
        assert page.evaluate("document.activeElement.tagName") != "INPUT"
        wait_idle(page)
        assert not (exports / "browser_run").exists()
        sidebar.get_by_role("button", name="Export").click()
        sidebar.get_by_text("Exported 44 images").wait_for(timeout=60_000)
        page.close()

    assert len(planned) == 20 + 24
    with store.connect(world.db) as conn:
        live = verdicts.live_verdicts(conn)
    assert dict(zip(live["sha256"], live["verdict"])) == planned
    assert set(live["annotator"]) == {"nancy cubz"} and live["seconds"].notna().all()
    loaded = validate_manifest(exports / "browser_run", check_files=True, check_hashes=True)
    assert dict(zip(loaded.rows["sha256"], loaded.rows["verdict"])) == planned
    relpath = dict(zip(world.shas, world.relpaths))
    ood = [relpath[s] for s in world.shas if planned.get(s) == "no_foreground"]
    assert (exports / "browser_run" / OOD_LIST_NAME).read_text().splitlines() == ood


def test_two_annotators_at_once_never_see_the_same_image(browser, tmp_path):
    world = build_review_store(tmp_path / "w", 40)
    with serve(world.db, tmp_path / "server.log", grid_size=6, dwell_seconds=DWELL) as url:
        pages = {}
        for name in ("ana", "bo"):
            context = browser.new_context(viewport={"width": 1300, "height": 900})
            pages[name] = context.new_page()
            sign_in(pages[name], url, name)
        grids = {name: wait_grid(page) for name, page in pages.items()}
        assert len(grids["ana"]) == len(grids["bo"]) == 6
        assert not set(grids["ana"]) & set(grids["bo"])
        for page in pages.values():
            choose_view(page, "Single")
        shown = {name: wait_single(page) for name, page in pages.items()}
        seen = {name: [sha] for name, sha in shown.items()}
        for round_ in range(6):
            assert shown["ana"] != shown["bo"]
            for page in pages.values():
                wait_guards(page)
            for page in pages.values():  # both press before either waits
                page.keyboard.press("n" if round_ % 2 else "c")
            for name, page in pages.items():
                shown[name] = wait_single(page, old=shown[name])
                seen[name].append(shown[name])
        for page in pages.values():
            page.context.close()
    assert not set(seen["ana"]) & set(seen["bo"])
    with store.connect(world.db) as conn:
        live = verdicts.live_verdicts(conn)
    assert len(live) == 12 and live["sha256"].is_unique


def test_leases_are_renewed_while_the_annotator_is_active_and_only_then(browser, tmp_path):
    world = build_review_store(tmp_path / "w", 30)
    with serve(world.db, tmp_path / "server.log", lease_seconds=15, dwell_seconds=DWELL) as url:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        sign_in(page, url, "active")
        cells = wait_grid(page)

        def expiry() -> float:
            with store.connect(world.db) as conn:
                rows = conn.execute(
                    "SELECT MIN(expires_at) FROM leases WHERE annotator = 'active'"
                ).fetchone()
            return rows[0]

        first = expiry()
        for step in range(14):  # 7 s of work on the page: the mouse moves, a tile flips
            page.mouse.move(200 + 40 * step, 300)
            if step == 4:
                page.keyboard.press("3")
            page.wait_for_timeout(500)
        page.wait_for_timeout(5_500)  # the renewal due for that work
        renewed = expiry()
        assert renewed > first + 4  # renewed (every lease_seconds / 3 = 5 s while active)
        page.wait_for_timeout(11_000)  # idle for two more renewal periods: nothing renews
        assert expiry() == renewed
        assert wait_grid(page) == cells  # still the same page, the flip still there
        assert checked_tiles(page) == {2}
        page.close()
