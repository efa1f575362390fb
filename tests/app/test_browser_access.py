"""The review app in a real browser: accessibility, what images look like, how they travel, and
that a verdict reruns only its view.

- one tab stop per tile in reading order with a visible focus ring, no focusable element that
  cannot be seen, Escape leaves a text field;
- alt text on every image, captions at 4.5:1 or better, one colour per meaning;
- small images drawn pixel for pixel; zoom by key and by click;
- images inside the page as data URIs (no ``/media`` URL to fetch without a session);
- a grid submit and a single-view verdict rerun their fragment only, never the sidebar.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

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

IMAGE_SIZE = (64, 48)  # the world's side: small enough to be enlarged
CELL = '[class*="st-key-gridcell_"]'

FOCUSED_JS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const r = el.getBoundingClientRect();
  let opacity = 1;
  for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
  const cell = el.closest('[class*="st-key-gridcell_"]');
  const index = cell ? Number(Array.from(cell.classList).find((c) => c.startsWith('st-key-gridcell_'))
    .slice('st-key-gridcell_'.length)) : null;
  return {tag: el.tagName, label: (el.getAttribute('aria-label') || el.innerText || '').slice(0, 40),
          cell: index, width: r.width, height: r.height, opacity,
          visibility: getComputedStyle(el).visibility,
          ring: cell ? getComputedStyle(cell).outlineStyle + ' ' + getComputedStyle(cell).outlineWidth : null};
}"""

CONTRAST_JS = """(selector) => {
  const parse = (c) => { const v = c.match(/rgba?\\(([^)]+)\\)/)[1].split(',').map(Number);
                         return {r: v[0], g: v[1], b: v[2], a: v.length > 3 ? v[3] : 1}; };
  const lin = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; };
  const lum = (c) => 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.a > 0) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  return Array.from(document.querySelectorAll(selector)).filter((el) => el.innerText.trim())
    .map((el) => {
      const fg = parse(getComputedStyle(el).color), bg = background(el);
      const mix = (k) => fg[k] * fg.a + bg[k] * (1 - fg.a);
      const l = [lum({r: mix('r'), g: mix('g'), b: mix('b')}), lum(bg)].sort((a, b) => b - a);
      return [el.innerText.slice(0, 30), (l[0] + 0.05) / (l[1] + 0.05)];
    });
}"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("access")
    world = build_review_store(folder, 200, size=IMAGE_SIZE)
    with serve(world.db, folder / "server.log", dwell_seconds=0.3) as url:
        yield world, url


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    yield context.new_page()
    context.close()


def test_one_visible_tab_stop_per_tile_in_reading_order_with_a_focus_ring(app, page):
    world, url = app
    sign_in(page, url, "tabber")
    wait_grid(page)
    page.evaluate("document.activeElement.blur()")
    stops = []
    for _ in range(80):
        page.keyboard.press("Tab")
        stop = page.evaluate(FOCUSED_JS)
        if stops and stop == stops[0]:
            break
        stops.append(stop)
    tiles = [s["cell"] for s in stops if s and s["cell"] is not None]
    assert tiles == list(range(12))  # one stop per tile, in reading order
    first = next(i for i, s in enumerate(stops) if s and s["cell"] == 0)
    assert [s["cell"] for s in stops[first : first + 12]] == list(range(12))  # consecutive
    for stop in filter(None, stops):  # nothing focusable that cannot be seen
        assert stop["width"] > 0 and stop["height"] > 0, stop
        assert stop["opacity"] > 0.5 and stop["visibility"] == "visible", stop
    ring = [s["ring"] for s in stops if s and s["cell"] is not None]
    assert all(r.startswith("solid") and float(r.split()[1].removesuffix("px")) >= 2 for r in ring)


def test_escape_leaves_a_text_field_so_keys_are_shortcuts_again(app, page):
    world, url = app
    sign_in(page, url, "escaper")
    wait_grid(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Export manifest").click()
    name = sidebar.get_by_label("Name", exact=True)
    name.fill("round1")
    name.press("Escape")
    page.keyboard.press("2")
    assert name.input_value() == "round1"  # the key did not rename the export
    page.locator('.st-key-gridcell_1 input[type="checkbox"]:checked').wait_for()


def test_alt_text_contrast_and_one_colour_per_meaning(app, page):
    world, url = app
    sign_in(page, url, "reader")
    wait_grid(page)
    alts = page.evaluate(
        f"() => Array.from(document.querySelectorAll('{CELL} img')).map((i) => i.alt)"
    )
    relpaths = dict(zip(world.shas, world.relpaths))
    assert len(alts) == 12
    for i, alt in enumerate(alts):
        assert re.fullmatch(rf"Tile {i + 1}: #\d+, \d{{5}}\.png, model's top class \w+", alt), alt
    assert {alt.split(", ")[1] for alt in alts} <= {Path(p).name for p in relpaths.values()}
    for selector in [
        '[data-testid="stCaptionContainer"] p',
        f"{CELL} label p",
        ".hardood-header",
        '[data-testid="stSidebar"] p',
    ]:
        for text, ratio in page.evaluate(CONTRAST_JS, selector):
            assert ratio >= 4.5, (selector, text, ratio)
    wait_guards(page)
    page.keyboard.press("1")
    flipped = page.locator(".st-key-gridcell_0").evaluate(
        "(el) => getComputedStyle(el).borderColor"
    )
    plain_tile = page.locator(".st-key-gridcell_1").evaluate(
        "(el) => getComputedStyle(el).borderColor"
    )
    choose_view(page, "Single")
    wait_single(page)

    def button_colour(verdict: str) -> str:
        button = page.locator(f'[class*="st-key-verdict__{verdict}__"] button')
        return button.evaluate("(el) => getComputedStyle(el).backgroundColor")

    contains, no_fg = button_colour("contains_foreground"), button_colour("no_foreground")
    assert contains == flipped  # "contains" looks the same in both views
    assert no_fg != contains and plain_tile != flipped
    assert {button_colour("unsure"), button_colour("bad_image")}.isdisjoint({contains, no_fg})


def test_small_images_are_drawn_pixel_for_pixel_and_zoom_by_key_and_click(app, page):
    world, url = app
    sign_in(page, url, "zoomer")
    shas = wait_grid(page)
    wait_guards(page)
    img = page.locator(".st-key-gridcell_2 img")
    factor = int(img.evaluate("(el) => el.dataset.fitted"))
    assert (
        factor >= 2 and img.evaluate("(el) => getComputedStyle(el).imageRendering") == "pixelated"
    )
    box = img.bounding_box()
    badge = page.locator(".st-key-gridcell_2 .hardood-zoom")
    badge.evaluate("(el) => { el.style.visibility = 'hidden'; }")  # it sits over a corner
    shot = page.screenshot(
        clip={
            "x": round(box["x"]),
            "y": round(box["y"]),
            "width": round(box["width"]),
            "height": round(box["height"]),
        }
    )
    shot = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    source = world.root / world.relpaths[world.shas.index(shas[2])]
    source = np.asarray(Image.open(source).convert("RGB"))
    expected = np.repeat(np.repeat(source, factor, axis=0), factor, axis=1)
    assert shot.shape == expected.shape and (shot == expected).all()  # every pixel as it is
    badge.evaluate("(el) => { el.style.visibility = ''; }")

    page.locator('.st-key-gridcell_2 input[type="checkbox"]').focus()
    page.keyboard.press("v")
    zoom = page.locator("#hardood-zoom")
    zoom.wait_for()
    assert zoom.locator("img").first.get_attribute("alt").startswith("Tile 3:")
    page.keyboard.press("Escape")
    zoom.wait_for(state="detached")
    assert page.evaluate("document.activeElement.closest('.st-key-gridcell_2') !== null")
    page.locator(".st-key-gridcell_4 .hardood-zoom").click()
    zoom.wait_for()
    assert zoom.locator("img").first.get_attribute("alt").startswith("Tile 5:")
    zoom.click()
    zoom.wait_for(state="detached")
    assert page.locator(f'{CELL} input[type="checkbox"]:checked').count() == 0  # zoom flips nothing


def test_images_travel_inside_the_page_not_as_media_urls(app, page):
    world, url = app
    sign_in(page, url, "private")
    wait_grid(page)
    sources = page.evaluate("() => Array.from(document.images).map((i) => i.src)")
    assert sources and all(src.startswith("data:image/") for src in sources)
    assert not re.search(r"(?<!static)/media/", page.content())  # Streamlit's media URLs


def test_a_verdict_reruns_only_its_view_never_the_sidebar(app, page):
    world, url = app
    messages: list[ForwardMsg] = []

    def on_socket(socket):
        def on_frame(payload):
            if isinstance(payload, bytes):
                message = ForwardMsg()
                message.ParseFromString(payload)
                messages.append(message)

        socket.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    sign_in(page, url, "fragments")
    cells = wait_grid(page)
    wait_guards(page)
    for press, wait in [("Enter", lambda: wait_grid(page, old=cells)), ("n", None)]:
        if press == "n":
            choose_view(page, "Single")
            shown = wait_single(page)
            wait_guards(page)
            wait = lambda shown=shown: wait_single(page, old=shown)  # noqa: E731
        wait_idle(page)
        messages.clear()
        page.keyboard.press(press)
        wait()
        wait_idle(page)
        starts = [m for m in messages if m.WhichOneof("type") == "new_session"]
        deltas = [m for m in messages if m.WhichOneof("type") == "delta"]
        assert len(starts) == 1 and starts[0].metadata.run.fragment_ids, press  # a fragment run
        assert deltas and all(m.delta.fragment_id for m in deltas), press
        assert {m.metadata.delta_path[0] for m in deltas} == {0}, press  # main area only
