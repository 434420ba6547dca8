"""Headless Chromium as `bin/manage bench_first_status` and the browser tests drive it:
Debian's chromium through Playwright, so that both measure and test the same browser."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Playwright is a development dependency: imported by the callers.
    from playwright.sync_api import Browser, Playwright

CHROMIUM = "/usr/bin/chromium"
# Headless in a container, as root (no sandbox), with none of the background traffic
# (updates, sync, QUIC probes) that would compete with the page being timed.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
