"""`chat_run` runs one chat from the terminal and prints its events as they come;
`chat_replay` prints a run's event log."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from chat.models import Run
from tests.chat.scripted_runs import OFFLINE, reseed, run_scripted
from tests.personas import make_user
from tests.scripted_providers import CallTool, ProviderError, Reply, ScriptedProvider, use_scripted


def chat_run(*args: str) -> str:
    out = StringIO()
    call_command("chat_run", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# chat_run drives the loop in a thread of its own while it prints from the database:
# both see only committed rows, so these tests are transactional.


@pytest.mark.django_db(transaction=True)
def test_chat_run_runs_a_chat_with_the_offline_model_and_prints_its_events():
    reseed()

    output = chat_run("Show me the queue_summary", "--mode", "ops")

    run = Run.objects.get()
    assert (run.mode, run.stop_reason, run.started_by.username) == (
        "ops",
        "completed",
        "service-chat-cli",
    )
    lines = output.splitlines()
    assert lines[-1] == f"Run #{run.pk} completed."
    assert len(lines) == run.events.count() + 1
    assert lines[0].startswith("#1 ")
    assert "status       idle: Queued" in lines[0]
    assert any("tool_start   queue_summary {}" in line for line in lines)
    assert any("token" in line and "The queue_summary tool returned" in line for line in lines)
    assert "stop_reason  completed (Completed)." in lines[-2]


@pytest.mark.django_db(transaction=True)
def test_chat_run_exits_with_1_when_the_run_does_not_complete():
    reseed()
    operator = make_user("oscar-operator")

    down = ScriptedProvider([ProviderError("upstream down", retryable=False)])
    with use_scripted(OFFLINE, down), pytest.raises(CommandError, match="provider_error") as raised:
        chat_run("Hello", "--user", "oscar-operator")

    assert raised.value.returncode == 1
    assert Run.objects.get().started_by == operator


@pytest.mark.django_db
def test_chat_run_refuses_an_unknown_user():
    with pytest.raises(CommandError, match="There is no user 'nobody'"):
        chat_run("Hello", "--user", "nobody")


@pytest.mark.django_db
def test_chat_replay_prints_a_runs_events_in_order(operator, django_capture_on_commit_callbacks):
    run, _ = run_scripted(
        [CallTool("queue_summary"), Reply("All quiet.")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
    )
    out = StringIO()

    call_command("chat_replay", str(run.pk), stdout=out)

    lines = out.getvalue().splitlines()
    seqs = [int(line.split()[0][1:]) for line in lines[:-1]]
    assert seqs == list(range(1, run.events.count() + 1))
    assert "tool_result  queue_summary ok in" in "\n".join(lines)
    assert "budget       steps 2/10 (20.0%, green)" in "\n".join(lines)
    assert "guardrails   loop 1/5 · no_progress 1/3 · repeated_failure 0/3" in "\n".join(lines)
    assert re.search(
        r"model_call   step 2 \S+ via \S+ finished ok in \d+ ms, \d+ in / \d+ out tokens, cost 0",
        "\n".join(lines),
    )
    assert lines[-1] == f"Run #{run.pk} (normal): stopped, stop reason completed."


@pytest.mark.django_db
def test_chat_replay_prints_json_lines_after_a_seq(operator, django_capture_on_commit_callbacks):
    run, _ = run_scripted([Reply("Hi.")], user=operator, capture=django_capture_on_commit_callbacks)
    out = StringIO()

    call_command("chat_replay", str(run.pk), "--after", "3", "--json", stdout=out)

    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [event["seq"] for event in events] == list(range(4, run.events.count() + 1))
    assert events[-1]["type"] == "stop_reason"
    assert events[-1]["data"]["reason"] == "completed"


@pytest.mark.django_db
def test_chat_replay_refuses_an_unknown_run():
    with pytest.raises(CommandError, match="There is no run #999"):
        call_command("chat_replay", "999", stdout=StringIO())
