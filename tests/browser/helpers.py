"""What the browser tests share: launching Chromium, logging in, screenshots."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from playwright.sync_api import Page, expect

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "demo-pass-123"  # accounts.tests.factories.UserFactory's password
TIMEOUT_MS = 15_000


def _png_1x1() -> bytes:
    """A valid 1x1 PNG (payment proofs are sniffed by their content, not their name)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xf0\xb9\x0b")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = _png_1x1()


def login(page: Page, username: str, password: str = PASSWORD) -> Page:
    """Log in through the login page, as a person would."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".user-menu .user-name")).to_have_text(username)
    return page


def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def mark_no_reload(page: Page) -> None:
    """Tag the loaded document: assert_not_reloaded then proves the page changed in place."""
    page.evaluate("window.__noReload = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload === true"), f"{page.url} was reloaded"
