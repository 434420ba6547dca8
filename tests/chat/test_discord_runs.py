"""Agent runs from Discord, against the fake Discord API with interactions signed by
a key the test makes: `/run` is answered "deferred" at once (Discord waits 3 seconds
only), starts the run as the linked member, and one bot message follows the run as
on Telegram (edited along the way, throttled, ending with the stop reason, the
suggestion and a link, its Stop button gone); the deferred answer is then deleted,
so the run's message is the one answer."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from chat import run_messages
from chat.models import ChatSession, Run, RunChatMessage, RunStatus, StopReason
from chat.run_messages import refresh, refresh_run_messages
from chat.runs import open_run
from controlplane.chat_accounts import ChatIdentity
from tests.chat.scripted_runs import OFFLINE
from tests.chat.test_bot_runs import clock, sweep_between_steps
from tests.controlplane.discord_bots import (
    ALICE,
    DM_CHANNEL,
    app,
    command,
    discord,
    linked,
    post_interaction,
    signing_key,
)
from tests.controlplane.discord_notices import buttons_of, edits_of, messages_to, notice, press
from tests.scripted_providers import CallTool, Reply, ScriptedProvider, use_scripted

__all__ = ["app", "clock", "discord", "signing_key", "sweep_between_steps"]  # fixtures

pytestmark = pytest.mark.django_db
TOKEN = "interaction-token"  # what `command()` gives each interaction


def test_a_run_started_from_discord_is_followed_by_one_message_up_to_its_stop_reason(
    client,
    discord,
    app,
    signing_key,
    operator,
    clock,
    sweep_between_steps,
    django_capture_on_commit_callbacks,
):
    linked(app, operator)
    scripted = ScriptedProvider(
        [CallTool("check_in"), CallTool("check_in"), Reply("The queue is <empty> *and* calm.")]
    )

    with use_scripted(OFFLINE, scripted), django_capture_on_commit_callbacks(execute=True):
        response = post_interaction(client, app, signing_key, command("run", "ops check the queue"))

    # Answered at once, "deferred"; the answer was then deleted: the run's message is it.
    assert response.json() == {"type": 5, "data": {}}
    assert discord.original_responses == {TOKEN: None}
    run = Run.objects.get()
    assert (run.started_by, run.mode, run.stop_reason) == (operator, "ops", StopReason.COMPLETED)
    assert run.messages.first().content == "check the queue"
    [message] = messages_to(discord, DM_CHANNEL)
    first = discord.posted("POST")[0].body
    assert f"Run #{run.pk}** (Ops mode): Idle" in first["content"]
    assert "Queued" in first["content"]
    stop = {
        "type": 2,
        "style": 1,
        "label": f"Stop run #{run.pk}",
        "custom_id": f"run-stop:{run.pk}",
    }
    assert first["components"] == [{"type": 1, "components": [stop]}]
    along_the_way = [edit["content"] for edit in edits_of(discord, message)]
    assert len(along_the_way) == 2
    assert "Step 1 of" in along_the_way[0]
    assert "Step 2 of" in along_the_way[1]

    # The run stopped after the last sweep: the next one shows its final state.
    clock.advance(2)
    assert refresh_run_messages() == 1

    final = edits_of(discord, message)[-1]
    assert f"Run #{run.pk} stopped: Completed" in final["content"]
    assert "The queue is \\<empty> \\*and\\* calm." in final["content"]  # escaped
    assert "The agent finished its answer." in final["content"]
    link = f"{settings.SITE_URL}/chat/{run.session_id}/?run={run.pk}"
    assert f"[Open run #{run.pk}]({link})" in final["content"]
    assert final["components"] == []  # stopped: no Stop button any more
    assert RunChatMessage.objects.get(run=run).finished_at is not None
    clock.advance(10)
    assert refresh_run_messages() == 0
    assert len(edits_of(discord, message)) == 3


def _identity() -> ChatIdentity:
    from controlplane.models import Integration

    return ChatIdentity(Integration.objects.get(), "discord", ALICE, DM_CHANNEL, "Alice")


def test_edits_are_throttled_and_a_rate_limit_waits_discords_retry_after(
    discord, app, operator, clock
):
    linked(app, operator)
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="normal"
    )
    follower = run_messages.follow_run(run, _identity())
    assert refresh(follower)
    [message] = messages_to(discord, DM_CHANNEL)
    Run.objects.filter(pk=run.pk).update(steps=1, next_seq=run.next_seq + 1)
    clock.advance(0.5)
    assert refresh_run_messages() == 0  # within the second: not written
    discord.fail(discord.rate_limited(retry_after=30))  # longer than the client waits

    clock.advance(1)
    assert refresh_run_messages() == 0
    clock.advance(29)
    assert refresh_run_messages() == 0  # still within the 30 s
    clock.advance(2)
    assert refresh_run_messages() == 1
    [edit] = edits_of(discord, message)
    assert "Step 1 of" in edit["content"]


def test_a_message_deleted_in_the_channel_is_posted_again(discord, app, operator, clock):
    linked(app, operator)
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="normal"
    )
    assert refresh(run_messages.follow_run(run, _identity()))
    discord.messages.clear()  # deleted in Discord: an edit gets 404 Unknown Message
    Run.objects.filter(pk=run.pk).update(steps=1, next_seq=run.next_seq + 1)

    clock.advance(2)
    assert refresh_run_messages() == 0
    clock.advance(2)
    assert refresh_run_messages() == 1

    [again] = messages_to(discord, DM_CHANNEL)
    assert "Step 1 of" in again["content"]
    assert RunChatMessage.objects.get(run=run).message_id == again["id"]


def test_the_stop_button_under_the_message_stops_the_run(
    client, discord, app, signing_key, operator, clock, django_capture_on_commit_callbacks
):
    linked(app, operator)
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="normal"
    )
    assert refresh(run_messages.follow_run(run, _identity()))
    [message] = messages_to(discord, DM_CHANNEL)

    with django_capture_on_commit_callbacks(execute=True):
        response = press(
            client, app, signing_key, buttons_of(message)[f"Stop run #{run.pk}"], message
        )

    assert notice(response) == f"Stopping run #{run.pk}."
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.STOPPED_BY_USER)


def test_run_is_refused_for_an_observer_in_the_deferred_answer(
    client, discord, app, signing_key, observer, django_capture_on_commit_callbacks
):
    linked(app, observer)

    with django_capture_on_commit_callbacks(execute=True):
        response = post_interaction(client, app, signing_key, command("run", "check the queue"))

    assert response.json()["type"] == 5
    answer: Any = discord.original_responses[TOKEN]
    assert "needs the Operator or Owner tier" in answer["content"]
    assert answer["allowed_mentions"] == {"parse": []}
    assert not Run.objects.exists()
    assert discord.messages == {}
