"""Opening a report in a real headless browser: Debian's chromium, driven by playwright
(scripts/test.sh installs chromium; playwright is a dev dependency). One way to start it, for
every test that opens a page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@contextmanager
def browser_page(width: int = 1200, height: int = 900) -> Iterator[Page]:
    """A page of a fresh headless chromium, closed on the way out."""
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: the report tests need Debian's chromium "
                    "(scripts/test.sh installs it; or: sudo apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def wait_for_plots(page: Page, count: int) -> None:
    """Until plotly has drawn `count` plots (its script is inline: nothing to fetch)."""
    page.wait_for_function("n => document.querySelectorAll('.js-plotly-plot .main-svg')"
                           ".length >= n", arg=count, timeout=60_000)
