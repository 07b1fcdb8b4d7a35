"""The dashboard's browser: Debian's Chromium driven by Playwright (never a browser Playwright
downloads), one per module, a new context and page per test. Every test's page is saved as a
full-page screenshot under test-output/screenshots/ (or $SENSORLAKE_TEST_OUTPUT/screenshots/),
and a test fails on an uncaught exception in the page or a console error that is not a 4xx
answer the test provoked."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 10_000
# What Chromium logs for an answer of 4xx: a key refused (401), a scope too small (403), a bad
# query (400). The page shows those itself; they are not errors of the page.
CLIENT_ERROR = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d")

expect.set_options(timeout=TIMEOUT_MS)
TAKEN: list[Path] = []


def screenshot_dir() -> Path:
    """Relative to where pytest runs (the repository's root): test-output/screenshots."""
    return Path(os.environ.get("SENSORLAKE_TEST_OUTPUT", "test-output")) / "screenshots"


class Tab:
    """One browser context and its page, with what the page logged and asked the network for."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page: Page = context.new_page()
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def unexpected_console_errors(self) -> list[str]:
        return [text for text in self.console_errors if not CLIENT_ERROR.match(text)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield instance
        instance.close()


@pytest.fixture
def browse(browser: Browser, request: pytest.FixtureRequest
           ) -> Iterator[Callable[..., Tab]]:
    """browse(base_url=..., **context options) opens a new context and page. At the end of the
    test each page is screenshotted and checked for page errors."""
    tabs: list[Tab] = []

    def open_tab(**options: Any) -> Tab:
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        tab = Tab(context)
        tabs.append(tab)
        return tab

    yield open_tab

    folder = screenshot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for i, tab in enumerate(tabs):
        path = folder / (f"{request.node.name}.png" if i == 0
                         else f"{request.node.name}-{i + 1}.png")
        try:
            tab.page.screenshot(path=str(path), full_page=True)
            TAKEN.append(path)
            print(f"screenshot: {path}")
        except PlaywrightError as error:  # a crashed page: say so, the checks below still run
            print(f"no screenshot {path}: {error}")
        tab.context.close()
        problems += [f"uncaught in the page: {text}" for text in tab.page_errors]
        problems += [f"console error: {text}" for text in tab.unexpected_console_errors()]
    assert not problems, "\n".join(problems)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TAKEN:
        terminalreporter.write_line(
            f"dashboard screenshots ({len(TAKEN)}): {screenshot_dir().resolve()}")
