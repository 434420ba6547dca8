"""Discord's interactions endpoint: every request's Ed25519 signature verified with
the application's public key (a forged, missing or stale one is refused 401 and
logged without the body), a replay refused, PING answered with PONG, and whatever
arrives never a 500."""

from __future__ import annotations

import json
import logging
import time
from itertools import count

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.models import ChatAccount
from tests.controlplane.discord_bots import (
    app,
    command,
    discord,
    interactions_path,
    linked,
    make_app,
    post_interaction,
    signed_headers,
    signing_key,
)

__all__ = ["app", "discord", "signing_key"]  # fixtures

pytestmark = pytest.mark.django_db
BODY_MARKER = "private words nobody may log"
_ping_ids = count(7_100_000_000_000_000_001)


def _ping() -> dict:
    return {"id": str(next(_ping_ids)), "application_id": "1", "type": 1, "version": 1}


def test_a_signed_ping_is_answered_with_pong(client, app, signing_key):
    response = post_interaction(client, app, signing_key, _ping())

    assert response.status_code == 200
    assert response.json() == {"type": 1}


def test_a_forged_signature_is_refused_401_and_logged_without_the_body(client, app, caplog):
    caplog.set_level(logging.INFO)
    forger = Ed25519PrivateKey.generate()

    response = post_interaction(client, app, forger, command("help", BODY_MARKER))

    assert response.status_code == 401
    assert f"Discord interactions {app.pk}: refused a request from 127.0.0.1: a bad signature" in (
        caplog.text
    )
    assert BODY_MARKER not in caplog.text


def test_a_signature_of_another_body_is_refused(client, app, signing_key):
    signed = json.dumps(_ping()).encode()
    tampered = json.dumps({**command("unlink")}).encode()

    response = client.post(
        interactions_path(app),
        tampered,
        content_type="application/json",
        headers=signed_headers(signing_key, signed),
    )

    assert response.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Signature-Timestamp": "1800000000"},
        {"X-Signature-Ed25519": "ab" * 64},
        {"X-Signature-Ed25519": "not hex", "X-Signature-Timestamp": "1800000000"},
        {"X-Signature-Ed25519": "ab" * 10, "X-Signature-Timestamp": "1800000000"},
    ],
)
def test_a_missing_or_malformed_signature_is_refused_401(client, app, signing_key, headers, caplog):
    caplog.set_level(logging.INFO)

    response = post_interaction(client, app, signing_key, _ping(), headers=headers)

    assert response.status_code == 401
    assert "refused a request from 127.0.0.1" in caplog.text


@pytest.mark.parametrize("age", [-3600, 301, 86400])
def test_a_stale_timestamp_is_refused_even_when_signed(client, app, signing_key, age, caplog):
    caplog.set_level(logging.INFO)
    body = json.dumps(_ping()).encode()
    headers = signed_headers(signing_key, body, timestamp=int(time.time()) - age)

    response = post_interaction(client, app, signing_key, body, headers=headers)

    assert response.status_code == 401
    assert "a stale timestamp" in caplog.text


def test_a_signed_timestamp_that_is_not_a_number_is_refused(client, app, signing_key):
    body = json.dumps(_ping()).encode()
    signature = signing_key.sign(b"soon" + body).hex()
    headers = {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": "soon"}

    assert post_interaction(client, app, signing_key, body, headers=headers).status_code == 401


def test_a_replayed_interaction_is_refused(client, app, signing_key, owner):
    linked(app, owner)
    body = json.dumps(command("unlink")).encode()
    headers = signed_headers(signing_key, body)

    first = post_interaction(client, app, signing_key, body, headers=headers)
    again = post_interaction(client, app, signing_key, body, headers=headers)

    assert first.status_code == 200
    assert again.status_code == 401
    assert not ChatAccount.objects.exists()


def test_another_applications_key_does_not_open_this_one(client, app, signing_key, discord):
    other_key = Ed25519PrivateKey.generate()
    make_app(discord, other_key, name="other-discord")

    assert post_interaction(client, app, other_key, _ping()).status_code == 401


def test_an_unknown_or_disabled_integration_is_refused(client, app, signing_key):
    body = json.dumps(_ping()).encode()
    response = client.post(
        "/integrations/discord/999999/interactions/",
        body,
        content_type="application/json",
        headers=signed_headers(signing_key, body),
    )
    assert response.status_code == 401

    app.enabled = False
    app.save()
    assert post_interaction(client, app, signing_key, _ping()).status_code == 401


def test_a_stored_public_key_that_is_not_a_key_refuses_rather_than_fails(client, app, signing_key):
    app.settings = {**app.settings, "public_key": "zz"}
    app.save()

    assert post_interaction(client, app, signing_key, _ping()).status_code == 401


def test_the_endpoint_takes_only_a_post(client, app):
    assert client.get(interactions_path(app)).status_code == 405


# Whatever arrives, signed: never a 500


def test_a_signed_body_that_is_not_json_is_a_400(client, app, signing_key):
    assert post_interaction(client, app, signing_key, b"{not json").status_code == 400
    assert post_interaction(client, app, signing_key, b"\xff\xfe").status_code == 400


@pytest.mark.parametrize(
    "interaction",
    [
        [],
        "a string",
        None,
        {},
        {"id": 5, "type": 1},
        {"id": "7200000000000000001", "type": 2},
        {"id": "7200000000000000002", "type": 2, "user": {"id": "x"}, "channel_id": "1"},
        {"id": "7200000000000000003", "type": 2, "user": {"id": "1"}, "channel_id": "1"},
        {"id": "7200000000000000004", "type": 2, "user": {"id": "1"}, "channel_id": ["1"]},
        {"id": "7200000000000000005", "type": 2, "member": "x", "channel_id": "1"},
        {
            "id": "7200000000000000006",
            "type": 2,
            "user": {"id": "1"},
            "channel_id": "1",
            "data": {"name": 5},
        },
        {
            "id": "7200000000000000007",
            "type": 3,
            "user": {"id": "1"},
            "channel_id": "1",
            "data": {"custom_id": "approval:1"},
        },
        {
            "id": "7200000000000000008",
            "type": 3,
            "user": {"id": "1"},
            "channel_id": "1",
            "data": {"custom_id": "approval:1"},
            "message": {"id": "../1"},
        },
    ],
)
def test_malformed_interactions_are_a_400(client, app, signing_key, interaction):
    response = post_interaction(client, app, signing_key, json.dumps(interaction))

    assert response.status_code == 400
    assert "error" in response.json()


def test_an_interaction_kind_not_handled_is_answered_politely(client, app, signing_key):
    interaction = {"id": "7300000000000000001", "type": 5, "user": {"id": "1"}}

    response = post_interaction(client, app, signing_key, interaction)

    assert response.status_code == 200
    assert response.json()["data"]["flags"] == 64
    assert "I do not handle that kind of interaction" in response.json()["data"]["content"]


def test_command_options_of_odd_shapes_are_ignored(client, app, signing_key, owner):
    linked(app, owner)
    interaction = command("help")
    interaction["data"]["options"] = [None, {"name": "args"}, {"value": {"deep": 1}}, "x"]

    response = post_interaction(client, app, signing_key, interaction)

    assert response.status_code == 200
    assert response.json()["data"]["content"].startswith("You act as wendy-owner.")


def test_a_body_past_the_upload_limit_is_a_400_not_a_500(client, app, signing_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    interaction = command("help", "x" * 20_000)

    response = post_interaction(client, app, signing_key, interaction)

    assert response.status_code == 400
