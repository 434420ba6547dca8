"""Slow Discord commands: Discord waits 3 seconds for an interaction's response, so a
command registered as slow (`/status`, `/run`) from a linked member is answered
"deferred" (type 5) at once and its answer written afterwards into the original
response through the interaction's webhook; fast commands and refusals are answered
in the response itself; Discord being down when the answer is written is logged,
never raised."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.controlplane.discord_bots import (
    TOKEN_PART,
    app,
    command,
    discord,
    linked,
    post_interaction,
    signing_key,
)

__all__ = ["app", "discord", "signing_key"]  # fixtures

pytestmark = pytest.mark.django_db
TOKEN = "interaction-token"  # what `command()` gives each interaction


def test_status_is_deferred_then_written_into_the_original_response(
    client, discord, app, signing_key, observer, django_capture_on_commit_callbacks
):
    linked(app, observer)

    with django_capture_on_commit_callbacks(execute=True):
        response = post_interaction(client, app, signing_key, command("status"))

    assert response.status_code == 200
    assert response.json() == {"type": 5, "data": {}}
    [written] = [r for r in discord.requests if r.method == "PATCH"]
    assert written.path == f"/webhooks/{app.settings['application_id']}/{TOKEN}/messages/@original"
    answer: Any = discord.original_responses[TOKEN]
    assert answer["content"].startswith("Status at ")
    assert "Approvals: none pending." in answer["content"]
    assert answer["allowed_mentions"] == {"parse": []}


def test_in_a_server_channel_the_deferred_answer_is_ephemeral(
    client, discord, app, signing_key, observer, django_capture_on_commit_callbacks
):
    linked(app, observer)

    with django_capture_on_commit_callbacks(execute=True):
        response = post_interaction(client, app, signing_key, command("status", in_server=True))

    # The flag is given with the deferral: the answer written later keeps it.
    assert response.json() == {"type": 5, "data": {"flags": 64}}
    assert "Status at " in discord.original_responses[TOKEN]["content"]


def test_fast_commands_and_refusals_are_answered_at_once(
    client, discord, app, signing_key, observer, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        refused = post_interaction(client, app, signing_key, command("status"))
    linked(app, observer)
    with django_capture_on_commit_callbacks(execute=True):
        helped = post_interaction(client, app, signing_key, command("help"))

    assert refused.json()["type"] == 4  # not linked: the polite refusal, nothing run
    assert "not linked to a staff account" in refused.json()["data"]["content"]
    assert helped.json()["type"] == 4
    assert discord.original_responses == {}


def test_discord_down_when_the_answer_is_written_is_logged_not_raised(
    client, discord, app, signing_key, observer, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.WARNING)
    linked(app, observer)
    discord.fail(discord.outage())

    with django_capture_on_commit_callbacks(execute=True):
        response = post_interaction(client, app, signing_key, command("status"))

    assert response.json()["type"] == 5
    assert discord.original_responses == {}
    assert "a deferred answer was not written: Discord answered 502" in caplog.text
    assert TOKEN_PART not in caplog.text
