"""Settings a first run relies on: links follow where bin/run serves, no warning for
the `.env` the embedded default does not need, mail logged as one line unless
EMAIL_URL says where to send it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from controlplane.environment import read_env_file, site_url
from tests.settings_process import settings_process

MAIL_LOG = "controlplane.mail_log.LoggedEmailBackend"


def test_links_follow_the_port_and_host_the_server_is_given() -> None:
    read, logged = settings_process(
        "controlplane.settings", "SITE_URL", "HOST", "PORT", "MAILERS", PORT="8123"
    )

    assert (read["SITE_URL"], read["HOST"], read["PORT"]) == (
        "http://127.0.0.1:8123",
        "127.0.0.1",
        8123,
    )
    assert read["MAILERS"]["default"]["BACKEND"] == MAIL_LOG
    assert ".env not found" not in logged


def test_a_site_url_that_is_set_wins_over_host_and_port() -> None:
    read, _ = settings_process(
        "controlplane.settings",
        "SITE_URL",
        "MAILERS",
        HOST="0.0.0.0",  # noqa: S104 (read, not bound)
        PORT="9000",
        SITE_URL="https://ops.example.com",
        EMAIL_URL="consolemail://",
    )

    assert read["SITE_URL"] == "https://ops.example.com"
    assert read["MAILERS"]["default"]["BACKEND"] == "django.core.mail.backends.console.EmailBackend"


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 8080, "http://127.0.0.1:8080"),  # noqa: S104 (read, not bound)
        ("::", 8080, "http://127.0.0.1:8080"),
        ("::1", 9001, "http://[::1]:9001"),
        ("[::1]", 9001, "http://[::1]:9001"),
        ("ops.internal", 80, "http://ops.internal:80"),
    ],
)
def test_the_default_site_url_is_where_a_browser_reaches_the_server(
    host: str, port: int, expected: str
) -> None:
    assert site_url(host, port) == expected


def test_a_missing_env_file_is_skipped_without_a_word(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    assert read_env_file(tmp_path / ".env") is False
    assert caplog.records == []


def test_an_env_file_that_is_there_is_read(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CONTROLPLANE_TEST_FROM_DOTENV", raising=False)
    (tmp_path / ".env").write_text("CONTROLPLANE_TEST_FROM_DOTENV=read\n")

    assert read_env_file(tmp_path / ".env") is True
    assert os.environ.pop("CONTROLPLANE_TEST_FROM_DOTENV") == "read"
