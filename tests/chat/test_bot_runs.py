"""Agent runs from Telegram, against the fake Bot API: `/run` starts a run as the
linked member under the web's rules and one bot message follows it (edited along the
way within Telegram's limits, ending with the stop reason, the suggestion and a link);
`/stop` stops the member's active run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings

from chat import bot_runs, run_messages, tools
from chat.models import ChatSession, Run, RunChatMessage, RunStatus, StopReason
from chat.run_messages import refresh, refresh_run_messages
from chat.runs import open_run, request_stop
from controlplane.chat_commands import REFUSAL
from tests.chat.scripted_runs import ANY_ARGUMENTS, OFFLINE, switch
from tests.chat.test_run_queueing import broker_down
from tests.controlplane.telegram_bots import ALICE, hook_bot, linked, post_update, say, telegram
from tests.scripted_providers import CallTool, Reply, ScriptedProvider, use_scripted
from tests.telegram_server import Answer

__all__ = ["broker_down", "hook_bot", "telegram"]  # fixtures

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(run_messages, "clock", fake)
    return fake


@pytest.fixture
def sweep_between_steps(clock: Clock) -> Iterator[None]:
    """A tool the scripted model calls: while the run works, two seconds pass and the
    periodic sweep runs, as it would beside a real run."""

    def check_in(arguments: dict[str, Any], context: tools.ToolContext) -> Any:
        clock.advance(2)
        return {"refreshed": refresh_run_messages()}

    tools.register(tools.Tool("check_in", "Lets time pass.", ANY_ARGUMENTS, check_in))
    yield
    tools.unregister("check_in")


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages]


def test_a_run_started_from_run_is_followed_by_one_message_up_to_its_stop_reason(
    client,
    telegram,
    hook_bot,
    operator,
    clock,
    sweep_between_steps,
    django_capture_on_commit_callbacks,
):
    linked(hook_bot, operator)
    scripted = ScriptedProvider(
        [CallTool("check_in"), CallTool("check_in"), Reply("The queue is <empty> & calm.")]
    )

    with use_scripted(OFFLINE, scripted), django_capture_on_commit_callbacks(execute=True):
        replies = say(client, telegram, hook_bot, "/run ops check the queue")

    run = Run.objects.get()
    assert (run.started_by, run.mode, run.stop_reason) == (operator, "ops", StopReason.COMPLETED)
    assert run.messages.first().content == "check the queue"
    assert run.session.user == operator
    # One message, sent before the worker had the run (it says queued), then edited.
    assert replies == []
    assert len(telegram.sent) == 1
    first = telegram.sent[0]
    assert str(first["chat_id"]) == str(ALICE)
    assert f"Run #{run.pk}</b> (Ops mode): Idle" in first["text"]
    assert "Queued" in first["text"]
    stop = {"text": f"Stop run #{run.pk}", "callback_data": f"run-stop:{run.pk}"}
    assert first["reply_markup"] == {"inline_keyboard": [[stop]]}
    along_the_way = texts(telegram.edited)
    assert len(along_the_way) == 2
    assert all(e["message_id"] == first["message_id"] for e in telegram.edited)
    assert "Step 1 of" in along_the_way[0]
    assert "Step 2 of" in along_the_way[1]

    # The run stopped after the last sweep: the next one shows its final state.
    clock.advance(2)
    assert refresh_run_messages() == 1

    final = telegram.edited[-1]["text"]
    assert f"Run #{run.pk} stopped: Completed" in final
    assert "The queue is &lt;empty&gt; &amp; calm." in final  # the answer, escaped
    assert "The agent finished its answer." in final  # the recovery suggestion
    link = f"{settings.SITE_URL}/chat/{run.session_id}/?run={run.pk}"
    assert f'<a href="{link}">Open run #{run.pk}</a>' in final
    assert "reply_markup" not in telegram.edited[-1]  # stopped: no Stop button any more
    follower = RunChatMessage.objects.get(run=run)
    assert follower.finished_at is not None
    clock.advance(10)
    assert refresh_run_messages() == 0  # finished: never written again
    assert len(telegram.edited) == 3


def test_edits_are_throttled_to_one_a_second_and_the_last_state_is_always_sent(
    telegram, hook_bot, operator, clock
):
    account = linked(hook_bot, operator)
    session = ChatSession.objects.create(user=operator)
    run = open_run(session, user=operator, message="Look around", mode="normal")
    follower = run_messages.follow_run(run, _identity(account))

    assert refresh(follower)  # sent
    Run.objects.filter(pk=run.pk).update(steps=1, next_seq=run.next_seq + 1)
    clock.advance(0.5)
    assert not refresh_run_messages()  # within the second: not written
    Run.objects.filter(pk=run.pk).update(steps=2, next_seq=run.next_seq + 2)
    clock.advance(0.3)
    assert not refresh_run_messages()
    clock.advance(0.2)  # a second after the first write
    assert refresh_run_messages() == 1

    assert len(telegram.sent) == 1
    assert len(telegram.edited) == 1  # two changes, coalesced into one edit
    assert "Step 2 of" in telegram.edited[0]["text"]
    clock.advance(5)
    assert refresh_run_messages() == 0  # nothing new: no edit


def test_a_rate_limited_edit_waits_telegrams_retry_after(telegram, hook_bot, operator, clock):
    account = linked(hook_bot, operator)
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="normal"
    )
    follower = run_messages.follow_run(run, _identity(account))
    assert refresh(follower)
    Run.objects.filter(pk=run.pk).update(steps=1, next_seq=run.next_seq + 1)
    telegram.fail(telegram.rate_limited(retry_after=7))

    clock.advance(2)
    assert refresh_run_messages() == 0
    clock.advance(6)
    assert refresh_run_messages() == 0  # still within the 7 s
    clock.advance(1.5)
    assert refresh_run_messages() == 1
    assert "Step 1 of" in telegram.edited[-1]["text"]


def test_a_run_that_stopped_while_no_sweep_ran_is_finished_by_the_next_one(
    telegram, hook_bot, operator, clock, django_capture_on_commit_callbacks
):
    """The row is the state: after a restart the sweep picks up where it was."""
    account = linked(hook_bot, operator)
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="normal"
    )
    assert refresh(run_messages.follow_run(run, _identity(account)))
    with django_capture_on_commit_callbacks(execute=True):
        request_stop(run, user=operator)  # stopped while nothing followed it

    clock.advance(60)
    assert refresh_run_messages() == 1

    final = telegram.edited[-1]["text"]
    assert f"Run #{run.pk} stopped: Stopped by a person" in final
    assert "oscar-operator stopped the run" in final
    assert RunChatMessage.objects.get(run=run).finished_at == clock.now


def test_a_message_deleted_in_the_chat_is_sent_again(telegram, hook_bot, operator, clock):
    account = linked(hook_bot, operator)
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="normal"
    )
    assert refresh(run_messages.follow_run(run, _identity(account)))
    Run.objects.filter(pk=run.pk).update(steps=1, next_seq=run.next_seq + 1)
    telegram.fail(
        Answer(
            400,
            {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: message to edit not found",
            },
        )
    )

    clock.advance(2)
    assert refresh_run_messages() == 0
    clock.advance(2)
    assert refresh_run_messages() == 1

    assert len(telegram.sent) == 2
    assert "Step 1 of" in telegram.sent[-1]["text"]
    assert RunChatMessage.objects.get(run=run).message_id == str(telegram.sent[-1]["message_id"])


def test_a_run_waiting_for_approval_says_so_and_links_the_approval(
    client, telegram, hook_bot, operator, clock, django_capture_on_commit_callbacks
):
    linked(hook_bot, operator)
    scripted = ScriptedProvider(
        [CallTool("create_task", {"title": "Rotate the keys"}), Reply("Created it.")]
    )
    with use_scripted(OFFLINE, scripted), django_capture_on_commit_callbacks(execute=True):
        say(client, telegram, hook_bot, "/run ops: rotate the keys")
    run = Run.objects.get()
    assert run.status == RunStatus.WAITING_APPROVAL

    clock.advance(2)
    assert refresh_run_messages() == 1

    text = telegram.edited[-1]["text"]
    assert f"waiting for approval #{run.pending_approval_id}" in text
    assert (
        f'<a href="{settings.SITE_URL}/approvals/">Decide approval #{run.pending_approval_id}</a>'
        in text
    )
    assert "never the person who started the run" in text
    assert RunChatMessage.objects.get(run=run).finished_at is None  # it will resume or stop


def test_run_is_refused_for_an_observer(client, telegram, hook_bot, observer):
    linked(hook_bot, observer)

    replies = say(client, telegram, hook_bot, "/run check the queue")

    assert replies == [
        "Starting and stopping runs needs the Operator or Owner tier; your account "
        "(olive-observer) may watch them only (on the web, and with /status)."
    ]
    assert not Run.objects.exists()


def test_run_is_refused_for_an_unlinked_account(client, telegram, hook_bot, operator):
    replies = say(client, telegram, hook_bot, "/run check the queue")

    assert replies == [REFUSAL]
    assert not Run.objects.exists()


@pytest.mark.parametrize("text", ["/run turbo: go fast", "/run deep_reserch find it"])
def test_run_with_a_bad_mode_names_the_modes(client, telegram, hook_bot, operator, text):
    linked(hook_bot, operator)

    (reply,) = say(client, telegram, hook_bot, text)

    assert reply.startswith("Unknown mode '")
    assert "normal, deep_research, code, ops" in reply
    assert not Run.objects.exists()


def test_run_without_a_mode_uses_normal_and_refuses_what_the_web_refuses(
    client, telegram, hook_bot, operator, django_capture_on_commit_callbacks
):
    linked(hook_bot, operator)
    assert bot_runs.parse_run("check the queue") == ("normal", "check the queue")
    assert bot_runs.parse_run("Deep-Research: dig") == ("deep_research", "dig")
    assert bot_runs.parse_run("Normally, the queue") == ("normal", "Normally, the queue")

    (too_long,) = say(client, telegram, hook_bot, "/run " + "x" * 20_001)
    (nothing,) = say(client, telegram, hook_bot, "/run ops")

    assert "at most 20000 characters" in too_long
    assert nothing.startswith("The run was not started: This field is required.")
    assert not Run.objects.exists()


def test_stop_stops_the_members_active_run(
    client, telegram, hook_bot, operator, operator2, django_capture_on_commit_callbacks
):
    linked(hook_bot, operator)
    session = ChatSession.objects.create(user=operator)
    older = open_run(session, user=operator, message="One", mode="normal")
    newer = open_run(session, user=operator, message="Two", mode="normal")
    open_run(session, user=operator2, message="Not mine", mode="normal")

    with django_capture_on_commit_callbacks(execute=True):
        (reply,) = say(client, telegram, hook_bot, "/stop")

    assert reply == (f"Stopped run #{newer.pk}. You have 1 more active run: /stop NUMBER.")
    newer.refresh_from_db()
    assert (newer.status, newer.stop_reason) == (RunStatus.STOPPED, StopReason.STOPPED_BY_USER)
    assert newer.stop_requested_by == operator
    older.refresh_from_db()
    assert older.status == RunStatus.IDLE
    (again,) = say(client, telegram, hook_bot, f"/stop {newer.pk}")
    assert again == f"Run #{newer.pk} has already stopped (Stopped by a person)."


def press(client, telegram, hook_bot, data, user_id=ALICE):
    """Press a button under the bot's message; the notice Telegram shows."""
    update = telegram.update(
        {
            "callback_query": {
                "id": f"query-{user_id}-{data}",
                "from": {"id": user_id, "is_bot": False, "first_name": "Alice"},
                "message": {"message_id": 1, "chat": {"id": user_id, "type": "private"}},
                "data": data,
            }
        }
    )
    assert post_update(client, hook_bot, update).status_code == 200
    return telegram.answered[-1].get("text", "")


def test_the_stop_button_stops_the_run_for_an_operator_and_not_for_an_observer(
    client, telegram, hook_bot, operator, observer, django_capture_on_commit_callbacks
):
    linked(hook_bot, operator)
    linked(hook_bot, observer, user_id=7002)
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="normal"
    )
    data = f"run-stop:{run.pk}"

    assert press(client, telegram, hook_bot, data, user_id=7002) == (
        "Stopping runs needs the Operator or Owner tier."
    )
    run.refresh_from_db()
    assert run.status == RunStatus.IDLE
    with django_capture_on_commit_callbacks(execute=True):
        assert press(client, telegram, hook_bot, data) == f"Stopping run #{run.pk}."
    run.refresh_from_db()
    assert (run.status, run.stop_requested_by) == (RunStatus.STOPPED, operator)
    assert run.stop_reason == StopReason.STOPPED_BY_USER
    assert press(client, telegram, hook_bot, data) == f"Run #{run.pk} has already stopped."
    assert press(client, telegram, hook_bot, "run-stop:x") == "This run no longer exists."


def test_stop_with_no_active_run_says_so(client, telegram, hook_bot, operator, observer):
    linked(hook_bot, operator)

    assert say(client, telegram, hook_bot, "/stop") == ["You have no active run: nothing to stop."]
    assert say(client, telegram, hook_bot, "/stop 999") == ["There is no run #999."]
    assert say(client, telegram, hook_bot, "/stop soon") == [
        "Send /stop alone for your active run, or /stop followed by a run's number."
    ]


def test_stop_is_refused_for_an_observer(client, telegram, hook_bot, operator, observer):
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="normal"
    )
    linked(hook_bot, observer, user_id=7002)

    (reply,) = say(client, telegram, hook_bot, f"/stop {run.pk}", user_id=7002)

    assert "needs the Operator or Owner tier" in reply
    run.refresh_from_db()
    assert run.status == RunStatus.IDLE


def _identity(account: Any) -> Any:
    from controlplane.chat_accounts import ChatIdentity

    return ChatIdentity(
        account.integration, account.platform, account.platform_user_id, account.chat_id, ""
    )


@pytest.mark.django_db(transaction=True)
def test_a_run_the_queue_cannot_take_is_said_in_its_message_and_nothing_is_left(
    client, telegram, hook_bot, operator, clock, broker_down
):
    linked(hook_bot, operator)

    replies = say(client, telegram, hook_bot, "/run check the queue")

    (queued,) = telegram.sent  # sent once committed, before the hand-off; then corrected
    assert replies == [queued["text"]]
    assert "Queued" in queued["text"]
    assert not Run.objects.exists()
    assert not RunChatMessage.objects.exists()
    assert telegram.edited[-1]["message_id"] == queued["message_id"]
    assert "was not started" in telegram.edited[-1]["text"]
    assert "work queue could not be reached" in telegram.edited[-1]["text"]


def test_run_is_refused_up_front_while_runs_are_switched_off(
    client, telegram, hook_bot, operator, django_capture_on_commit_callbacks
):
    linked(hook_bot, operator)
    switch("chat.runs.enabled", False, django_capture_on_commit_callbacks)

    (reply,) = say(client, telegram, hook_bot, "/run check the queue")

    assert reply.startswith("The run was not started: feature toggle chat.runs.enabled is off.")
    assert not Run.objects.exists()
    assert not ChatSession.objects.exists()
