"""Review app latency in a real browser, with a 10,000-item queue.

    .venv/bin/python benches/app_latency.py [--items 10000] [--single 60] [--pages 10]

Builds a store synthetically (real small PNGs written to a temporary pool, real store rows),
serves it with the same Streamlit command as ``hardood annotate``, and drives Debian's chromium
through Playwright. Measured in the page, from the keydown to the next image loaded:

- single view: verdict key -> next image shown (target: median < 150 ms);
- grid view: Enter on a page of 12 -> next page with every thumbnail loaded (median < 300 ms).

Before each key press the previous run must be over and the page guards open (every tile seen),
as for a person looking at the image. The app runs with ``--dwell-seconds 0`` here: the dwell
delays when a key may be pressed, not how fast the next image comes, and a bench that waited a
second per image would measure nothing more. Also saves a screenshot of each view (grid at
1366x768, single with the CAM beside the image, progress, and the lead's Team, Disagreements and
Export) for the README.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from curate import store  # noqa: E402
from curate.review import annotators, gold, verdicts  # noqa: E402
from tests.app.browser_helpers import (  # noqa: E402
    GRID_READY_JS,
    SINGLE_READY_JS,
    choose_view,
    launch_chromium,
    serve,
    sign_in,
    wait_grid,
    wait_guards,
    wait_idle,
    wait_single,
)
from tests.curate.review_fixtures import build_review_store  # noqa: E402

KEY_CLOCK_JS = (
    "window.__keyAt = 0;"
    "window.addEventListener('keydown', () => { window.__keyAt = performance.now(); }, true);"
)
# elapsed ms since the last keydown, once `ready(old)` holds
LEAD_ENV = "HARDOOD_BENCH_LEAD"
SINCE_KEY_JS = "(old) => {{ const ready = {ready}; return ready(old) ? performance.now() - window.__keyAt : false; }}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def simulate_team(db: Path, shas: list[str]) -> None:
    """Two simulated annotators judge the same items (for the progress page's agreement and the
    lead's disagreements); every seventh is gold, "no foreground" as every cue-only scene is."""
    flips = {"bo": lambda i: i % 5 == 0, "cy": lambda i: (i % 5 == 0) != (i % 12 == 0)}
    for name, flipped in flips.items():
        with store.connect(db) as conn:
            annotators.sign_in(conn, name)
            given = [
                (sha, "contains_foreground" if flipped(i) else "no_foreground", 2.0 + i % 4)
                for i, sha in enumerate(shas)
            ]
            verdicts.record_verdicts(conn, name, given, source="simulated", k=2)
    with store.connect(db) as conn:
        gold.add_gold(conn, {sha: "no_foreground" for sha in shas[::7]}, source="truth")


def lead_screenshots(page, url: str, folder: Path) -> None:
    """Sign in as the lead and photograph Team, Disagreements and Export (after a check)."""
    page.goto(url)
    page.get_by_label("Your name").fill("lee")
    page.get_by_role("textbox", name="Password").fill(os.environ[LEAD_ENV])
    page.get_by_role("button", name="Sign in").click()
    page.locator('[data-testid="stTableStyledTable"] tbody tr').first.wait_for()
    wait_idle(page)
    page.screenshot(path=folder / "lead_team.png")
    choose_view(page, "Disagreements")
    page.locator('[class*="st-key-adjudicate__"] button').first.wait_for()
    page.wait_for_function("() => document.querySelectorAll('.hardood-single img').length === 2")
    wait_idle(page)
    page.screenshot(path=folder / "lead_disagreements.png")
    choose_view(page, "Export")
    page.get_by_role("button", name="Check (writes nothing)").click()
    page.get_by_text("Checked: nothing was written.").wait_for()
    wait_idle(page)
    page.locator('[data-testid="stAlert"]').last.scroll_into_view_if_needed()  # the warnings
    page.screenshot(path=folder / "lead_export.png")


def measure_grid(page, pages: int) -> list[float]:
    cells = wait_grid(page)
    times = []
    for i in range(pages):
        for key in ("3", "8") if i % 2 else ("5",):
            page.keyboard.press(key)
        wait_guards(page)
        page.keyboard.press("Enter")
        handle = page.wait_for_function(SINCE_KEY_JS.format(ready=GRID_READY_JS), arg=cells)
        times.append(handle.json_value())
        cells = wait_grid(page)
    return times


def measure_single(page, verdicts: int) -> list[float]:
    shown = wait_single(page)
    times = []
    for i in range(verdicts):
        wait_guards(page)
        page.keyboard.press("c" if i % 6 == 0 else "n")
        handle = page.wait_for_function(SINCE_KEY_JS.format(ready=SINGLE_READY_JS), arg=shown)
        times.append(handle.json_value())
        shown = wait_single(page, old=shown)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="queue length")
    parser.add_argument("--single", type=int, default=60, help="verdicts timed in the single view")
    parser.add_argument("--pages", type=int, default=10, help="grid pages timed")
    parser.add_argument(
        "--viewport",
        default="1366x768",
        help="browser window, WIDTHxHEIGHT (the README's: 1366x768)",
    )
    parser.add_argument(
        "--screenshots", type=Path, default=REPO_ROOT / "docs" / "img", help="folder for the PNGs"
    )
    args = parser.parse_args()
    args.screenshots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hardood-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        world = build_review_store(tmp, args.items, size=(320, 240))
        simulate_team(world.db, world.shas[args.items // 2 :][:120])
        build_s = time.perf_counter() - start
        os.environ.setdefault(LEAD_ENV, "bench-lead")  # the server inherits it
        with serve(
            world.db, tmp / "server.log", export_dir=tmp / "exports", dwell_seconds=0.0,
            lead_password_env=LEAD_ENV, overlap=2,
        ) as url:  # fmt: skip
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                width, height = (int(v) for v in args.viewport.split("x"))
                page = browser.new_page(viewport={"width": width, "height": height})
                page.add_init_script(KEY_CLOCK_JS)
                sign_in(page, url, "ana")
                wait_grid(page)
                for key in ("2", "7"):
                    page.keyboard.press(key)
                page.wait_for_timeout(500)  # let the checkbox animation finish
                page.screenshot(path=args.screenshots / "grid.png")
                grid = measure_grid(page, args.pages)
                choose_view(page, "Single")
                single = measure_single(page, args.single)
                page.keyboard.press("h")  # the CAM beside the image, for the picture
                page.wait_for_function(
                    "() => document.querySelectorAll('.hardood-single img').length === 2"
                )
                wait_idle(page)
                page.screenshot(path=args.screenshots / "single.png")
                choose_view(page, "Progress")
                page.get_by_text("Cohen's kappa").wait_for()
                page.locator('[data-testid="stTableStyledTable"] tbody tr').first.wait_for()
                wait_idle(page)
                page.screenshot(path=args.screenshots / "progress.png")
                lead = browser.new_page(viewport={"width": width, "height": height})
                lead_screenshots(lead, url, args.screenshots)
                browser.close()
    rows = [
        ("single: verdict key -> next image", single, "median < 150",
         statistics.median(single) < 150),
        ("grid: Enter -> next page of 12", grid, "median < 300",
         statistics.median(grid) < 300),
    ]  # fmt: skip
    print(
        f"queue {args.items} items (store built in {build_s:.1f} s), {os.cpu_count()} CPU cores, "
        f"chromium headless at {args.viewport}; times in ms"
    )
    print(f"{'measurement':<36} {'n':>4} {'median':>8} {'p95':>8} {'max':>8}  {'target':<14} met")
    for name, values, target, met in rows:
        print(
            f"{name:<36} {len(values):>4} {statistics.median(values):>8.0f} "
            f"{percentile(values, 0.95):>8.0f} {max(values):>8.0f}  {target:<14} "
            f"{'yes' if met else 'NO'}"
        )
    print(f"screenshots: {', '.join(p.name for p in sorted(args.screenshots.glob('*.png')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
