"""The Telegram integration kind against a local fake Bot API: the connection test
names the bot, faults are said plainly (a refused token, a rate limit, an outage, an
unreachable API), and the token never shows in a message, an audit event or a log."""

from __future__ import annotations

import logging

import pytest

from controlplane.integrations import run_connection_test
from controlplane.models import AuditEvent, Integration
from controlplane.telegram import (
    TelegramClient,
    TelegramRateLimited,
    TelegramUnavailable,
)
from controlplane.telegram_integration import validate_telegram
from tests.controlplane.telegram_bots import (
    TOKEN,
    TOKEN_PART,
    bot,
    make_bot,
    raw_credentials,
    telegram,
)
from tests.local_servers import closed_port
from tests.telegram_server import Answer, TelegramServer

__all__ = ["bot", "telegram"]  # fixtures


def _shown(integration: Integration) -> str:
    integration.refresh_from_db()
    audit = AuditEvent.objects.values_list("after", "before")
    return f"{integration.last_test_message} {integration.last_error} {list(audit)}"


@pytest.mark.django_db
def test_test_connection_calls_getme_and_names_the_bot(telegram, bot):
    result = run_connection_test(bot)

    assert result.ok
    assert result.message == "Connected as @ops_bot (Ops)."
    assert [call.method for call in telegram.calls] == ["getMe"]
    bot.refresh_from_db()
    assert bot.last_test_ok is True
    assert AuditEvent.objects.filter(action="integration.tested").exists()


@pytest.mark.django_db
def test_a_revoked_token_is_said_plainly_and_never_shown(telegram, bot):
    telegram.bots.clear()

    result = run_connection_test(bot)

    assert not result.ok
    assert "Telegram refused the bot token (401 Unauthorized)" in result.message
    assert "@BotFather" in result.message
    assert TOKEN_PART not in _shown(bot)


@pytest.mark.django_db
def test_a_rate_limit_says_when_to_retry(telegram, bot):
    telegram.fail(TelegramServer.rate_limited(retry_after=17))

    result = run_connection_test(bot)

    assert not result.ok
    assert result.message == "Telegram's rate limit was reached (getMe): retry after 17 s."


def test_the_client_raises_a_rate_limit_with_telegrams_retry_after(telegram):
    telegram.fail(TelegramServer.rate_limited(retry_after=5))

    with (
        TelegramClient(TOKEN, api_url=telegram.url) as client,
        pytest.raises(TelegramRateLimited) as raised,
    ):
        client.send_message(1, "hello")

    assert raised.value.retry_after == 5
    assert raised.value.status == 429


def test_an_outage_is_worth_retrying_and_not_mistaken_for_a_bad_url(telegram):
    telegram.fail(TelegramServer.outage(), Answer(500, {"ok": False, "error_code": 500}))

    with TelegramClient(TOKEN, api_url=telegram.url) as client:
        with pytest.raises(TelegramUnavailable, match="Telegram answered 502 to getMe"):
            client.get_me()
        with pytest.raises(TelegramUnavailable, match="Telegram answered 500 to getMe"):
            client.get_me()


def test_an_unreachable_api_names_the_base_url_but_not_the_token(caplog):
    caplog.set_level(logging.DEBUG)
    api_url = f"http://127.0.0.1:{closed_port()}"

    with (
        TelegramClient(TOKEN, api_url=api_url) as client,
        pytest.raises(TelegramUnavailable) as raised,
    ):
        client.get_me()

    message = str(raised.value)
    assert message.startswith(f"Could not reach Telegram's Bot API at {api_url} (getMe): Connect")
    assert TOKEN_PART not in message
    # Nothing chained to it holds the request (whose URL holds the token).
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None
    assert TOKEN_PART not in caplog.text


def test_httpx_request_logs_show_no_token(telegram, caplog):
    caplog.set_level(logging.DEBUG, logger="httpx")

    with TelegramClient(TOKEN, api_url=telegram.url) as client:
        client.get_me()

    assert "getMe" in caplog.text  # httpx did log the request...
    assert TOKEN_PART not in caplog.text  # ...with its token masked
    assert TOKEN_PART not in repr(client)


@pytest.mark.django_db
def test_a_wrong_api_url_says_so(telegram):
    integration = make_bot(telegram)
    integration.settings = {**integration.settings, "api_url": f"{telegram.url}/not-the-api"}
    integration.save()

    result = run_connection_test(integration)

    assert not result.ok
    assert "404" in result.message
    assert TOKEN_PART not in result.message


def test_a_token_that_is_not_one_is_refused_by_the_form():
    assert validate_telegram({"bot_token": "hello"}, {}) == {
        "bot_token": "That is not a bot token: @BotFather gives one like 123456789:AAH... "
        "(digits, a colon, then 35 letters, digits, - or _)."
    }
    assert validate_telegram({"bot_token": TOKEN}, {}) == {}


@pytest.mark.django_db
def test_an_owner_adds_a_telegram_bot_in_the_admin_with_its_token_encrypted(client, owner):
    client.force_login(owner)
    response = client.post(
        "/admin/controlplane/integration/add/?kind=telegram",
        {
            "name": "ops-bot",
            "kind": "telegram",
            "enabled": "on",
            "secret_bot_token": TOKEN,
            "setting_updates": "polling",
            "setting_api_url": "https://api.telegram.org",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    integration = Integration.objects.get(name="ops-bot")
    assert integration.secrets == {"bot_token": TOKEN}
    assert TOKEN_PART not in raw_credentials(integration)
