"""Browser tests: the real UI in headless Chromium (the system's /usr/bin/chromium) through
Playwright's sync API, against pytest-django's live server, PostgreSQL and a real Celery worker.

One browser per session, a fresh context (cookies, storage) per user and test. Every page records
console errors and uncaught exceptions; a test fails when there were any.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Playwright's sync API keeps an asyncio loop in the main thread, which Django's
# "no database calls from async code" guard would take for an async view.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
# The browser is the system's Chromium: Playwright must never download one.
os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"

from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

from tests.browser.helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    TIMEOUT_MS,
)

expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Console:
    """What the pages reported: console messages of type error and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)
    # htmx reports a request it aborted itself (a newer one replaced it, or the page moved on)
    # as a console error: not a fault of the page.
    allowed: list[re.Pattern[str]] = field(
        default_factory=lambda: [re.compile(r"^htmx:(sendAbort|afterRequest), ")]
    )

    def allow(self, pattern: str) -> None:
        """Expect console errors matching `pattern` (e.g. a form answered with 400)."""
        self.allowed.append(re.compile(pattern))

    def watch(self, page: Page) -> Page:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror on {page.url}: {exc}"))
        return page

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.allowed):
            where = message.location.get("url", "")
            self.errors.append(
                f"console error on {message.page and message.page.url}: {message.text} ({where})"
            )


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM}: run through `make test` (it installs it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def console() -> Console:
    return Console()


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, live_server: Any, console: Console) -> Iterator[OpenPage]:
    """open_page(width=1280) -> a page in a new browser context (a person of their own) on the
    live server. A test with console errors on any of its pages fails at teardown."""
    contexts: list[BrowserContext] = []

    def _open(*, width: int = 1280, height: int = 900) -> Page:
        context = browser.new_context(
            base_url=live_server.url,
            viewport={"width": width, "height": height},
            locale="en-GB",
            timezone_id="UTC",
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return console.watch(context.new_page())

    yield _open
    errors = list(console.errors)
    for context in contexts:
        context.close()
    assert not errors, "the browser reported errors:\n" + "\n".join(errors)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name the screenshots' folder whenever browser tests ran (also under pytest-xdist, where
    the workers take the screenshots and only their reports reach this process)."""
    ran = any(
        getattr(report, "nodeid", "").startswith("tests/browser/")
        for reports in terminalreporter.stats.values()
        for report in reports
    )
    if ran and SCREENSHOTS.is_dir():
        shots = len(list(SCREENSHOTS.glob("*.png")))
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{shots} screenshots in {SCREENSHOTS.resolve()}")
