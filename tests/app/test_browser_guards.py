"""No blind verdicts, in a real browser: the grid fits the screen, Enter and ``n`` wait for the
dwell, Enter works only from the page or a tile, a page whose tiles were not all on screen cannot
be submitted, a new page starts at its top, and a reload keeps the annotator and the page.

One server for the module (the default one-second dwell, small images like the world's); each
test signs in as its own annotator, so their leases never meet.
"""

from __future__ import annotations

import pytest

from curate import store
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

DWELL_S = 1.0
ELAPSED_JS = "() => performance.now() - window.__hardoodPage.shownAt"
HINT_JS = "() => document.getElementById('hardood-hint')?.textContent || ''"
SCROLL_TOP_JS = "() => document.querySelector('[data-testid=\"stMain\"]').scrollTop"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guards")
    world = build_review_store(folder, 400, size=(64, 48))
    with serve(world.db, folder / "server.log", dwell_seconds=DWELL_S) as url:
        yield world, url


@pytest.fixture
def open_page(browser):
    contexts = []

    def make(width: int = 1366, height: int = 768):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def verdicts_of(world, name: str) -> dict[str, str]:
    with store.connect(world.db) as conn:
        live = verdicts.live_verdicts(conn)
    mine = live[live["annotator"] == name]
    return dict(zip(mine["sha256"], mine["verdict"]))


def inside_viewport(page, selector: str) -> list[bool]:
    return page.evaluate(
        """(selector) => Array.from(document.querySelectorAll(selector)).map((el) => {
             const r = el.getBoundingClientRect();
             return r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth
               && r.width > 0 && r.height > 0;
           })""",
        selector,
    )


@pytest.mark.parametrize("size", [(1366, 768), (1440, 900), (1920, 1080)])
def test_the_grid_and_its_submit_button_fit_one_screen(app, open_page, size):
    world, url = app
    page = open_page(*size)
    sign_in(page, url, f"fit {size[0]}")
    wait_grid(page)
    tiles = inside_viewport(page, '[class*="st-key-gridcell_"] img')
    assert len(tiles) == 12 and all(tiles)
    assert inside_viewport(page, '[class*="st-key-gridsubmit__"] button') == [True]
    assert page.evaluate(SCROLL_TOP_JS) == 0


def test_enter_waits_for_the_dwell_and_a_double_enter_submits_one_page(app, open_page):
    world, url = app
    page = open_page()
    sign_in(page, url, "dwell")
    first = wait_grid(page)
    page.keyboard.press("Enter")  # at once: the page has been up for less than the dwell
    assert page.evaluate(ELAPSED_JS) < DWELL_S * 1000, "machine too slow to press within the dwell"
    page.wait_for_timeout(300)
    assert "Look first" in page.evaluate(HINT_JS)
    assert verdicts_of(world, "dwell") == {}
    wait_guards(page)
    page.keyboard.press("Enter")
    second = wait_grid(page, old=first)
    page.keyboard.press("Enter")  # a second Enter right after the new page appeared
    assert page.evaluate(ELAPSED_JS) < DWELL_S * 1000, "machine too slow to press within the dwell"
    page.wait_for_timeout(int(DWELL_S * 1000) + 500)
    assert verdicts_of(world, "dwell") == dict.fromkeys(first, "no_foreground")
    assert wait_grid(page) == second  # still the second page, nothing of it recorded


def test_enter_submits_only_from_the_page_or_a_tile(app, open_page):
    world, url = app
    page = open_page()
    sign_in(page, url, "focus")
    shas = wait_grid(page)
    wait_guards(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    shortcuts = sidebar.locator("summary").filter(has_text="Keyboard shortcuts")
    shortcuts.focus()
    page.keyboard.press("Enter")  # Enter works the focused control: the expander opens
    sidebar.get_by_text("every thumbnail starts as").wait_for()
    undo = sidebar.get_by_role("button", name="Undo last (z)")
    undo.focus()
    page.keyboard.press("Enter")  # the undo button's own action: nothing to undo
    page.get_by_text("Nothing to undo").wait_for()
    wait_idle(page)
    wait_guards(page)
    assert verdicts_of(world, "focus") == {}
    page.locator('.st-key-gridcell_4 input[type="checkbox"]').focus()  # a tile has the focus
    page.keyboard.press("Enter")
    wait_grid(page, old=shas)
    assert verdicts_of(world, "focus") == dict.fromkeys(shas, "no_foreground")


def test_a_page_not_all_on_screen_cannot_be_submitted_and_new_pages_start_at_the_top(
    app, open_page
):
    world, url = app
    page = open_page(1366, 400)  # too short for three rows: the last row starts below the fold
    sign_in(page, url, "short screen")
    first = wait_grid(page)
    assert not all(inside_viewport(page, '[class*="st-key-gridcell_"] img'))
    page.wait_for_timeout(int(DWELL_S * 1000) + 200)
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert "have not been on screen" in page.evaluate(HINT_JS)
    # a click that reaches Submit without scrolling is refused the same way
    page.locator('[class*="st-key-gridsubmit__"] button').dispatch_event("click")
    page.wait_for_timeout(1500)
    assert verdicts_of(world, "short screen") == {}
    main = page.locator('[data-testid="stMain"]')
    main.evaluate("(el) => el.scrollTo(0, el.scrollHeight)")
    wait_guards(page)  # every tile has now been on screen
    assert page.evaluate(SCROLL_TOP_JS) > 0
    page.keyboard.press("Enter")
    wait_grid(page, old=first)
    assert verdicts_of(world, "short screen") == dict.fromkeys(first, "no_foreground")
    assert page.evaluate(SCROLL_TOP_JS) == 0  # the new page starts at its top


def test_n_in_the_single_view_waits_for_the_dwell(app, open_page):
    world, url = app
    page = open_page()
    sign_in(page, url, "single dwell")
    choose_view(page, "Single")
    shown = wait_single(page)
    page.keyboard.press("n")
    assert page.evaluate(ELAPSED_JS) < DWELL_S * 1000, "machine too slow to press within the dwell"
    page.wait_for_timeout(300)
    assert "Look first" in page.evaluate(HINT_JS)
    assert verdicts_of(world, "single dwell") == {}
    wait_guards(page)
    page.keyboard.press("n")
    wait_single(page, old=shown)
    assert verdicts_of(world, "single dwell") == {shown: "no_foreground"}


def test_a_reload_keeps_the_annotator_signed_in_and_the_page(app, open_page):
    world, url = app
    page = open_page()
    sign_in(page, url, "reloader")
    shas = wait_grid(page)
    page.reload()
    assert wait_grid(page) == shas
    assert page.get_by_label("Your name").count() == 0
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert "Signed in as reloader" in sidebar.inner_text()
    sidebar.get_by_role("button", name="Sign out").click()
    page.get_by_label("Your name").wait_for()
    page.reload()  # signed out stays signed out
    page.get_by_label("Your name").wait_for()
