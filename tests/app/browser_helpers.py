"""Drive the review app in a real browser: serve a store, sign in, wait for what is shown.

Used by the browser tests and by ``benches/app_latency.py``. The browser is Debian's chromium
(``apt-get install chromium``), driven by Playwright; Playwright's own browser download is never
used.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from app.annotate.launch import AnnotateConfig, streamlit_command

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]

# The single view's item, once its image has loaded and its verdict buttons belong to this run.
# Returns the item's sha256 when it differs from `old`, else false.
SINGLE_READY_JS = """
(old) => {
  const live = (el) => el && !el.closest('[data-stale="true"]');
  const box = Array.from(document.querySelectorAll('[class*="st-key-item__"]')).find(live);
  if (!box) return false;
  const cls = Array.from(box.classList).find((c) => c.startsWith('st-key-item__'));
  const sha = cls.slice('st-key-item__'.length);
  if (sha === old) return false;
  const img = box.querySelector('img');
  const button = document.querySelector(`[class*="st-key-verdict__no_foreground__${sha}"] button`);
  return img && img.complete && img.naturalWidth > 0 && live(button) ? sha : false;
}
"""

# The grid page (sha256 per cell, in order) once every thumbnail has loaded, if it differs from
# `old` (a list), else false.
GRID_READY_JS = """
(old) => {
  const live = (el) => el && !el.closest('[data-stale="true"]');
  const cells = Array.from(document.querySelectorAll('[class*="st-key-gridcell_"]')).filter(live);
  if (!cells.length) return false;
  const index = (cell) => Number(Array.from(cell.classList)
    .find((c) => c.startsWith('st-key-gridcell_')).slice('st-key-gridcell_'.length));
  cells.sort((a, b) => index(a) - index(b));  // columns come first in the document
  const shas = [];
  for (const cell of cells) {
    const img = cell.querySelector('img');
    const box = cell.querySelector('[class*="st-key-gridcb__"]');
    if (!img || !img.complete || img.naturalWidth === 0 || !box) return false;
    const cls = Array.from(box.classList).find((c) => c.startsWith('st-key-gridcb__'));
    shas.push(cls.slice('st-key-gridcb__'.length));
  }
  const submit = document.querySelector('[class*="st-key-gridsubmit__"] button');
  if (!live(submit) || JSON.stringify(shas) === JSON.stringify(old)) return false;
  return shas;
}
"""


# The page guards (hotkeys.js) allow a verdict: the dwell is over and every tile has been seen.
GUARDS_OPEN_JS = """
() => {
  const p = window.__hardoodPage;
  return Boolean(p && p.id) && performance.now() - p.shownAt >= p.dwellMs && p.seen.size >= p.total;
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(db: Path, log_path: Path, timeout: float = 90.0, **config) -> Iterator[str]:
    """Run ``hardood annotate``'s Streamlit command on a free localhost port; yields the URL.

    Waits for the health endpoint, and always stops the server (terminate, then kill).
    """
    port = free_port()
    command = streamlit_command(AnnotateConfig(db=db, port=port, **config))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{Path(log_path).read_text()}")
            try:
                with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"streamlit not ready after {timeout} s:\n{log_path.read_text()}"
                )
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def sign_in(page, url: str, name: str) -> None:
    page.goto(url)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector('[class*="st-key-gridsubmit__"]')


def choose_view(page, view: str) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_text(view, exact=True).click()


def wait_idle(page, timeout: float = 30_000) -> None:
    """Wait until the app's script run is over, so every widget of the page is there."""
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')"
        "?.getAttribute('data-test-script-state') === 'notRunning'",
        timeout=timeout,
    )


def wait_guards(page, timeout: float = 30_000) -> None:
    """Wait until the page may take a verdict: its dwell is over and every tile was on screen."""
    page.wait_for_function(GUARDS_OPEN_JS, timeout=timeout)


def wait_single(page, old: str | None = None, timeout: float = 30_000) -> str:
    """Wait until the single view shows a new item (not ``old``) and the run is over;
    returns the item's sha256."""
    sha = page.wait_for_function(SINGLE_READY_JS, arg=old, timeout=timeout).json_value()
    wait_idle(page, timeout)
    return sha


def wait_grid(page, old: list[str] | None = None, timeout: float = 30_000) -> list[str]:
    """Wait until the grid shows a new, fully loaded page and the run is over; returns its
    sha256s in order."""
    shas = page.wait_for_function(GRID_READY_JS, arg=old, timeout=timeout).json_value()
    wait_idle(page, timeout)
    return shas
