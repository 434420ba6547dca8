"""The Discord integration kind against a local fake Discord API: the connection test
names the bot and checks the application's id and public key, a malformed public key
is a form error, messages with buttons are posted and edited with rate limits waited
out, slash commands are registered, and the token never shows."""

from __future__ import annotations

import logging

import pytest
from django.core.management import CommandError, call_command

from controlplane.chat_commands import Button
from controlplane.discord import (
    DiscordAuthError,
    DiscordClient,
    DiscordError,
    DiscordRateLimited,
    DiscordUnavailable,
)
from controlplane.discord_integration import validate_discord
from controlplane.discord_replies import components
from controlplane.integrations import run_connection_test
from controlplane.models import AuditEvent, Integration
from tests.controlplane.discord_bots import (
    APPLICATION_ID,
    TOKEN,
    TOKEN_PART,
    app,
    discord,
    public_hex,
    signing_key,
)
from tests.discord_server import DiscordServer
from tests.local_servers import closed_port

__all__ = ["app", "discord", "signing_key"]  # fixtures

CHANNEL = "4400440044004400"
ADD = "/admin/controlplane/integration/add/?kind=discord"


def _shown(integration: Integration) -> str:
    integration.refresh_from_db()
    audit = AuditEvent.objects.values_list("after", "before")
    return f"{integration.last_test_message} {integration.last_error} {list(audit)}"


# The connection test


@pytest.mark.django_db
def test_test_connection_names_the_bot_and_its_endpoint_url(discord, app, settings):
    settings.SITE_URL = "https://ops.example.com"

    result = run_connection_test(app)

    assert result.ok
    assert result.message == (
        "Connected as ops-bot (application Ops Control). Its Interactions Endpoint URL is "
        f"https://ops.example.com/integrations/discord/{app.pk}/interactions/"
    )
    assert [(r.method, r.path) for r in discord.requests] == [
        ("GET", "/users/@me"),
        ("GET", "/applications/@me"),
    ]
    assert AuditEvent.objects.filter(action="integration.tested").exists()


@pytest.mark.django_db
def test_a_reset_token_is_said_plainly_and_never_shown(discord, app):
    discord.bots.clear()

    result = run_connection_test(app)

    assert not result.ok
    assert "Discord refused the bot token (401 Unauthorized)" in result.message
    assert "Reset Token" in result.message
    assert TOKEN_PART not in _shown(app)


@pytest.mark.django_db
def test_a_token_of_another_application_fails_the_test(discord, app):
    app.settings = {**app.settings, "application_id": "1234512345123451"}
    app.save()

    result = run_connection_test(app)

    assert not result.ok
    assert f"belongs to application {APPLICATION_ID} (Ops Control)" in result.message


@pytest.mark.django_db
def test_a_public_key_that_is_not_the_applications_fails_the_test(discord, app):
    app.settings = {**app.settings, "public_key": "ab" * 32}
    app.save()

    result = run_connection_test(app)

    assert not result.ok
    assert "the public key set here is not application Ops Control's" in result.message


@pytest.mark.django_db
def test_an_unreachable_api_is_said_plainly(app):
    app.settings = {**app.settings, "api_url": f"http://127.0.0.1:{closed_port()}/api/v10"}
    app.save()

    result = run_connection_test(app)

    assert not result.ok
    assert result.message.startswith("Could not reach Discord's API at http://127.0.0.1:")
    assert TOKEN_PART not in result.message


# The form


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("ab" * 32, True),
        ("AB" * 32, True),
        ("ab" * 31, False),  # 31 bytes
        ("ab" * 33, False),
        ("zz" * 32, False),
        ("", False),
    ],
)
def test_a_public_key_must_be_32_bytes_of_hex(key, valid):
    errors = validate_discord(
        {"bot_token": TOKEN}, {"public_key": key, "application_id": APPLICATION_ID}
    )

    assert ("public_key" not in errors) is valid


@pytest.mark.django_db
def test_an_owner_adding_a_discord_app_with_a_malformed_key_gets_a_form_error(
    client, owner, signing_key
):
    client.force_login(owner)
    form = {
        "name": "ops-discord",
        "enabled": "on",
        "secret_bot_token": TOKEN,
        "setting_application_id": APPLICATION_ID,
        "setting_public_key": "ab" * 31,
        "setting_api_url": "https://discord.com/api/v10",
        "_save": "Save",
    }

    refused = client.post(ADD, form)

    assert refused.status_code == 200
    assert "64 hexadecimal characters" in refused.content.decode()
    assert not Integration.objects.exists()

    saved = client.post(ADD, {**form, "setting_public_key": public_hex(signing_key)})

    assert saved.status_code == 302
    integration = Integration.objects.get()
    assert integration.kind == Integration.Kind.DISCORD
    assert integration.settings["public_key"] == public_hex(signing_key)
    assert integration.secrets == {"bot_token": TOKEN}
    assert (
        TOKEN_PART
        not in client.get(
            f"/admin/controlplane/integration/{integration.pk}/change/"
        ).content.decode()
    )


# Messages through the bot


def test_a_message_with_buttons_is_posted_then_edited(discord):
    buttons = components(
        ((Button("Approve", "approval:7:yes"), Button("Reject", "approval:7:no")),)
    )

    with DiscordClient(TOKEN, api_url=discord.url) as client:
        posted = client.post_message(CHANNEL, "Approve run 7?", buttons)
        client.edit_message(CHANNEL, posted["id"], "Approved by owen-owner.")

    stored = discord.messages[posted["id"]]
    assert stored["content"] == "Approved by owen-owner."
    assert stored["components"] == []  # the edit took the buttons away
    first = discord.posted("POST")[0].body
    assert first["components"] == [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 1, "label": "Approve", "custom_id": "approval:7:yes"},
                {"type": 2, "style": 1, "label": "Reject", "custom_id": "approval:7:no"},
            ],
        }
    ]
    assert first["allowed_mentions"] == {"parse": []}


def test_a_rate_limit_is_waited_out_then_the_message_is_sent_once(discord):
    waited: list[float] = []
    discord.fail(DiscordServer.rate_limited(retry_after=0.75))

    with DiscordClient(TOKEN, api_url=discord.url, sleep=waited.append) as client:
        posted = client.post_message(CHANNEL, "hello")
        discord.fail(DiscordServer.rate_limited(retry_after=1.5))
        client.edit_message(CHANNEL, posted["id"], "hello again")

    assert waited == [0.75, 1.5]
    assert len(discord.posted("POST")) == 2  # the refused one, then the one kept
    assert [m["content"] for m in discord.messages.values()] == ["hello again"]


def test_a_rate_limit_too_long_to_wait_is_raised_with_its_retry_after(discord):
    waited: list[float] = []
    discord.fail(DiscordServer.rate_limited(retry_after=60))

    with (
        DiscordClient(TOKEN, api_url=discord.url, sleep=waited.append) as client,
        pytest.raises(DiscordRateLimited) as raised,
    ):
        client.post_message(CHANNEL, "hello")

    assert raised.value.retry_after == 60
    assert waited == []
    assert discord.messages == {}


def test_rate_limits_in_a_row_give_up_after_three_attempts(discord):
    waited: list[float] = []
    discord.fail(*[DiscordServer.rate_limited(retry_after=0.1)] * 3)

    with (
        DiscordClient(TOKEN, api_url=discord.url, sleep=waited.append) as client,
        pytest.raises(DiscordRateLimited),
    ):
        client.post_message(CHANNEL, "hello")

    assert waited == [0.1, 0.1]


def test_an_outage_and_a_refused_token_are_distinct_errors(discord):
    discord.fail(DiscordServer.outage())
    with (
        DiscordClient(TOKEN, api_url=discord.url) as client,
        pytest.raises(DiscordUnavailable, match="Discord answered 502"),
    ):
        client.post_message(CHANNEL, "hello")

    with (
        DiscordClient("another-token", api_url=discord.url) as client,
        pytest.raises(DiscordAuthError),
    ):
        client.post_message(CHANNEL, "hello")


def test_a_message_over_discords_limit_is_refused_by_discord(discord):
    with (
        DiscordClient(TOKEN, api_url=discord.url) as client,
        pytest.raises(DiscordError, match=r"\(400: Invalid Form Body"),
    ):
        client.post_message(CHANNEL, "x" * 2001)


def test_an_id_that_is_not_a_number_never_reaches_a_path(discord):
    with DiscordClient(TOKEN, api_url=discord.url) as client, pytest.raises(DiscordError):
        client.edit_message(CHANNEL, "../../users/@me", "hello")

    assert discord.requests == []


def test_the_token_is_never_logged(discord, caplog):
    caplog.set_level(logging.DEBUG)

    with DiscordClient(TOKEN, api_url=discord.url) as client:
        client.post_message(CHANNEL, "hello")

    assert TOKEN_PART not in caplog.text


# Slash commands


@pytest.mark.django_db
def test_the_command_registers_the_chat_commands_as_slash_commands(discord, app):
    call_command("discord_commands", app.name)

    registered = {c["name"]: c for c in discord.commands[APPLICATION_ID]}
    assert {"link", "unlink", "help"} <= set(registered)
    assert "start" not in registered
    assert registered["link"]["options"] == [
        {
            "type": 3,
            "name": "code",
            "description": "The code from your profile page",
            "required": True,
        }
    ]
    assert registered["help"]["options"][0]["name"] == "args"
    assert registered["help"]["options"][0]["required"] is False
    assert AuditEvent.objects.filter(action="integration.commands_registered").exists()


@pytest.mark.django_db
def test_the_command_names_the_discord_integrations_when_given_another(discord, app):
    with pytest.raises(CommandError, match="Discord integrations: ops-discord"):
        call_command("discord_commands", "nope")


@pytest.mark.django_db
def test_the_command_says_why_discord_refused(discord, app):
    discord.bots.clear()

    with pytest.raises(CommandError, match="Discord refused the bot token"):
        call_command("discord_commands", app.name)


@pytest.mark.django_db
def test_the_admin_action_registers_the_commands_and_refuses_other_kinds(
    client, owner, discord, app
):
    other = Integration(kind=Integration.Kind.RAILWAY, name="railway-prod")
    other.save()
    client.force_login(owner)

    response = client.post(
        "/admin/controlplane/integration/",
        {
            "action": "register_discord_commands",
            "_selected_action": [app.pk, other.pk],
            "index": "0",
        },
        follow=True,
    )

    page = response.content.decode()
    # The core's commands and those the apps registered (/run, /status...), in order.
    registered = [c["name"] for c in discord.commands[APPLICATION_ID]]
    assert {"help", "link", "unlink"} <= set(registered)
    assert registered == sorted(registered)
    listed = ", ".join(f"/{name}" for name in registered)
    assert f"Discord now offers ops-discord&#x27;s commands: {listed}." in page
    assert "Railway-prod: not a Discord integration." in page
