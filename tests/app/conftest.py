"""Fixtures shared by the browser tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.browser_helpers import CHROMIUM, launch_chromium


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, one per test module."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "browser tests need Debian's chromium: apt-get install chromium"
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()
