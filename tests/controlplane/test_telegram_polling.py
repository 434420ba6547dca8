"""Long polling: updates fetched with getUpdates from where the last committed one
left off, so that a restart (even one in the middle of a batch) neither handles an
update twice nor loses one; faults back off and show on the integration."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from controlplane import audit, chat_commands
from controlplane.chat_commands import CommandRequest, register_command
from controlplane.models import AuditEvent, TelegramUpdate
from controlplane.telegram_polling import (
    TelegramPoller,
    forget_old_updates,
    poll_once,
    resume_offset,
)
from controlplane.tiers import Tier
from tests.controlplane.telegram_bots import (
    ALICE,
    bot,
    hook_bot,
    linked,
    make_bot,
    telegram,
)
from tests.controlplane.test_background import HANG_GUARD_SECONDS, wait_for
from tests.personas import make_user

__all__ = ["bot", "hook_bot", "telegram"]  # fixtures


class Killed(BaseException):
    """The process dies in the middle of an update (not an error it could catch)."""


@pytest.fixture
def counting(monkeypatch):
    """A `/count N` command whose effect is an audit event; it dies on N in `kill_on`."""
    monkeypatch.setattr(chat_commands, "_commands", dict(chat_commands._commands))
    kill_on: set[str] = set()

    def count(request: CommandRequest) -> str:
        audit.record("test.counted", after={"n": request.args}, actor=request.user)
        if request.args in kill_on:
            raise Killed
        return f"counted {request.args}"

    register_command("count", count, summary="Count")
    return kill_on


def _counted() -> list[str]:
    return [e.after["n"] for e in AuditEvent.objects.filter(action="test.counted").order_by("pk")]


@pytest.mark.django_db
def test_polling_answers_in_order_and_confirms_what_it_handled(telegram, bot, owner, counting):
    linked(bot, owner)
    ids = [telegram.queue(telegram.message(ALICE, f"/count {n}")) for n in (1, 2)]

    outcomes = poll_once(bot, timeout=0)

    assert outcomes == ["answered (1 replies)"] * 2
    assert telegram.texts_to(ALICE) == ["counted 1", "counted 2"]
    assert resume_offset(bot) == ids[-1] + 1
    assert poll_once(bot, timeout=0) == []
    assert telegram.calls[-1].parameters["offset"] == ids[-1] + 1
    assert telegram.pending_updates() == []  # confirmed to Telegram


@pytest.mark.django_db
def test_a_restart_in_the_middle_of_a_batch_loses_nothing_and_repeats_nothing(
    telegram, bot, owner, counting
):
    linked(bot, owner)
    for n in (1, 2, 3):
        telegram.queue(telegram.message(ALICE, f"/count {n}"))
    counting.add("2")

    with pytest.raises(Killed):  # the process is killed while it handles update 2
        poll_once(bot, timeout=0)

    assert _counted() == ["1"]  # update 2's effects were rolled back with its record
    counting.clear()
    # A new process: it knows only what the database holds.
    assert poll_once(bot, timeout=0) == ["answered (1 replies)"] * 2
    assert poll_once(bot, timeout=0) == []
    assert _counted() == ["1", "2", "3"]
    assert telegram.texts_to(ALICE) == ["counted 1", "counted 2", "counted 3"]
    assert TelegramUpdate.objects.filter(integration=bot).count() == 3


@pytest.mark.django_db
def test_an_update_that_fails_is_recorded_and_does_not_block_the_next(
    telegram, bot, owner, monkeypatch
):
    linked(bot, owner)
    telegram.queue(telegram.message(ALICE, "/help"))
    telegram.queue(telegram.message(ALICE, "/help"))
    calls = []

    def broken_then_fine(identity, text):
        calls.append(text)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return [chat_commands.Reply("fine")]

    monkeypatch.setattr("controlplane.telegram_updates.dispatch", broken_then_fine)

    assert poll_once(bot, timeout=0) == ["failed", "answered (1 replies)"]
    assert poll_once(bot, timeout=0) == []
    assert telegram.texts_to(ALICE) == ["fine"]


@pytest.mark.django_db
def test_a_rate_limit_pauses_polling_for_telegrams_retry_after(telegram, bot):
    telegram.fail(telegram.rate_limited(retry_after=30))
    poller = TelegramPoller()
    waits: list[float] = []
    poller.wait = waits.append

    assert poller.cycle()
    calls = len(telegram.calls)
    assert poller.cycle()  # within the pause: no request, a wait instead

    assert len(telegram.calls) == calls
    assert len(waits) == 1
    assert 0 < waits[0] <= 30
    bot.refresh_from_db()
    assert (
        bot.last_error
        == "Polling: Telegram's rate limit was reached (getUpdates): retry after 30 s."
    )


@pytest.mark.django_db
def test_a_webhook_left_set_is_named_on_the_integration(telegram, bot):
    telegram.webhook = {"url": "https://elsewhere.example.com/hook"}

    TelegramPoller().cycle()

    bot.refresh_from_db()
    assert "a webhook is set while the integration polls" in bot.last_error


@pytest.mark.django_db
def test_polling_works_again_after_an_outage_and_clears_the_error(telegram, bot, owner):
    linked(bot, owner)
    telegram.fail(telegram.outage())
    poller = TelegramPoller()
    poller.cycle()
    bot.refresh_from_db()
    assert "Telegram answered 502 to getUpdates" in bot.last_error

    poller.not_before.clear()  # the backoff is over
    telegram.queue(telegram.message(ALICE, "/help"))
    poller.cycle()

    bot.refresh_from_db()
    assert bot.last_error == ""
    assert telegram.texts_to(ALICE)[0].startswith("You act as wendy-owner.")


@pytest.mark.django_db
def test_only_polling_integrations_are_polled(telegram, hook_bot):
    assert TelegramPoller().cycle() is False
    assert telegram.calls == []


@pytest.mark.django_db
def test_the_command_polls_once(telegram, bot, owner, capsys):
    linked(bot, owner)
    telegram.queue(telegram.message(ALICE, "/help"))

    call_command("telegram_poll", "--once")

    assert "ops-bot: 1 updates handled." in capsys.readouterr().out
    assert len(telegram.texts_to(ALICE)) == 1


@pytest.mark.django_db
def test_the_command_refuses_a_webhook_integration(telegram, hook_bot):
    with pytest.raises(CommandError, match="takes its updates by webhook"):
        call_command("telegram_poll", hook_bot.name, "--once")


@pytest.mark.django_db
def test_old_records_go_but_the_newest_stays_where_polling_resumes(telegram, bot):
    for update_id in (10, 11, 12):
        TelegramUpdate.objects.create(integration=bot, update_id=update_id)
    TelegramUpdate.objects.update(received_at=timezone.now() - timedelta(days=30))
    TelegramUpdate.objects.create(integration=make_bot(telegram, name="other-bot"), update_id=5)

    assert forget_old_updates() == 2

    assert resume_offset(bot) == 13


@pytest.mark.django_db(transaction=True)
def test_the_in_process_poller_answers_while_it_runs_and_stops(telegram, settings):
    settings.TELEGRAM_POLL_TIMEOUT_SECONDS = 1
    integration = make_bot(telegram)
    linked(integration, make_user("poll-owner", Tier.OWNER))
    poller = TelegramPoller()
    thread = threading.Thread(target=poller.run)
    thread.start()
    try:
        telegram.queue(telegram.message(ALICE, "/help"))
        replies = wait_for(lambda: telegram.texts_to(ALICE), timeout=HANG_GUARD_SECONDS)
        assert replies[0].startswith("You act as poll-owner.")
    finally:
        poller.stop.set()
        thread.join(HANG_GUARD_SECONDS)
    assert not thread.is_alive()


def _handle_in_thread(integration_id, update, telegram_url, barrier, outcomes):
    from controlplane.models import Integration
    from controlplane.telegram_integration import client_for
    from controlplane.telegram_updates import handle_update

    try:
        integration = Integration.objects.get(pk=integration_id)
        with client_for(integration) as client:
            barrier.wait(timeout=HANG_GUARD_SECONDS)
            outcomes.append(handle_update(integration, update, client))
    except Exception as exc:  # surfaced in the main thread's assertions
        outcomes.append(f"crashed: {exc!r}")
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_processes_handling_one_update_at_once_handle_it_once(telegram, counting):
    integration = make_bot(telegram)
    linked(integration, make_user("race-owner", Tier.OWNER))
    for round_number in range(10):
        update = telegram.update(telegram.message(ALICE, f"/count {round_number}"))
        barrier = threading.Barrier(2)
        outcomes: list[str] = []
        threads = [
            threading.Thread(
                target=_handle_in_thread,
                args=(integration.pk, update, telegram.url, barrier, outcomes),
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=HANG_GUARD_SECONDS)
        assert sorted(outcomes) == ["answered (1 replies)", "duplicate"], outcomes
    assert _counted() == [str(n) for n in range(10)]
    assert len(telegram.texts_to(ALICE)) == 10
