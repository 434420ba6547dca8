"""Take the README's screenshots: Home, Chat, Routing, Health and Engine at 1,440 px.

Run by `bin/screenshots`. It sets up a fresh embedded install (SQLite, in-process
worker) in a temporary directory, loads the demo data, serves it with daphne on a free
port, runs one agent run from the chat page so the pages have something to show, and
saves one PNG per page beside this file. Nothing of the developer's own install is used
or changed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.browser import launch_chromium  # noqa: E402

OUT = Path(__file__).resolve().parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
WIDTH, HEIGHT = 1440, 900
PASSWORD = "screenshots-only-password"
PAGES = {
    "home": "/",
    "routing": "/routing/",
    "health": "/health/",
    "engine": "/selfheal/engine/",
}
SERVER_START_SECONDS = 60
ASGI_APPLICATION = "controlplane.asgi:application"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True)


def wait_until_serving(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited before serving")
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {SERVER_START_SECONDS} s")


def capture(url: str) -> None:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(f"{url}/accounts/login/")
        page.fill("input[name=username]", "owner")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_url(f"{url}/")

        page.goto(f"{url}/chat/")
        page.click("text=Start a session")
        page.fill("#id_message", "What did we spend today? Use todays_spend.")
        page.click("#run-button")
        # The run streams at the offline model's demo pace, then says why it stopped.
        expect(page.locator("#stop-reason .stop-label")).to_be_visible(timeout=120_000)
        page.reload()  # the page as a visitor finds it: the run listed in the sidebar
        page.screenshot(path=str(OUT / "chat.png"), full_page=False)
        print("saved docs/screenshots/chat.png")

        for name, path in PAGES.items():
            page.goto(f"{url}{path}")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
            print(f"saved docs/screenshots/{name}.png")
        browser.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as var_dir:
        env = {**os.environ, "VAR_DIR": var_dir}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        manage(env, "migrate", "--noinput", "--verbosity", "0")
        manage(env, "collectstatic", "--noinput", "--verbosity", "0")
        manage(env, "bootstrap", "--demo")
        manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model as u; "
            f"o = u().objects.get(username='owner'); o.set_password('{PASSWORD}'); o.save()",
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "daphne"), "--port", str(port), ASGI_APPLICATION],
            cwd=ROOT,
            env=env,
        )
        try:
            wait_until_serving(url, server)
            capture(url)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
