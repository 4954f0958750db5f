"""Headless Chromium for page tests (the mirror today, the staff dashboard later).

Debian's `chromium` (apt; .ci/run installs it) driven by Playwright's sync API. The browser
runs with its background services off: the CI network is closed and refuses them.
Nothing here skips: without chromium or playwright a page test fails and says what to install.

    from tests.support.browser import shot   # `browser` is a fixture (tests/conftest.py)

    def test_page(browser, tmp_path):
        page = browser.new_page()
        page.goto(url)
        ...
        shot(page, "mirror")   # var/artifacts/mirror.png
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "artifacts"
CHROMIUM = os.environ.get("PE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


# Function scope on purpose: Playwright's sync API keeps its event loop on the main thread
# while it is open, and any later test calling asyncio.run() would then fail.
@pytest.fixture
def browser():
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not exe:
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (see README), "
                    "or set PE_CHROMIUM", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page, name: str) -> Path:
    """Keep a screenshot as a test artifact: var/artifacts/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
