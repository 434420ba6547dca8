"""What the session page shows of a run, on load and live (one fragment for both):
each model call and tool call on the timeline with its start, duration, tokens and
cost; each step's reply set apart; guardrail counters that read healthy while they
are; a paused risky tool that says it awaits approval; statuses in sentence case; the
wall clock's origin for the browser to tick from; a placeholder naming real tools."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from chat import tools
from chat.models import RunStatus, StreamEvent
from chat.rendering import guardrails_context, render_event
from chat.views import message_placeholder
from controlplane.approvals import decide_approval
from controlplane.tiers import PermissionSnapshot
from routing.providers import Usage
from tests.chat.scripted_runs import (
    OFFLINE,
    events_of,
    run_scripted,
    scripted_tools,  # noqa: F401  (a fixture)
)
from tests.scripted_providers import CallTool, Reply, use_scripted

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scripted_tools")]

NO_PERMISSIONS = PermissionSnapshot(frozenset())


def page_of(client: Client, user: Any, run: Any) -> str:
    client.force_login(user)
    response = client.get(reverse("chat:session", args=[run.session_id]), {"run": run.pk})
    assert response.status_code == 200
    return response.content.decode()


def test_each_model_call_is_on_the_timeline_with_its_start_duration_tokens_and_cost(
    client: Client, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    turns = [
        CallTool("next_page", {}, usage=Usage(prompt_tokens=120, completion_tokens=8)),
        Reply("Page one.", usage=Usage(prompt_tokens=150, completion_tokens=30), cost="0.0042"),
    ]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    calls = [e.data for e in events_of(run, StreamEvent.Type.MODEL_CALL)]
    assert [(c["step"], c["phase"]) for c in calls] == [
        (1, "started"),
        (1, "finished"),
        (2, "started"),
        (2, "finished"),
    ]
    last = calls[-1]
    assert (last["outcome"], last["input_tokens"], last["output_tokens"], last["cost"]) == (
        "ok",
        150,
        30,
        "0.0042",
    )
    assert last["duration_ms"] >= 0
    html = page_of(client, operator, run)
    rows = re.findall(r'<li id="(model-call-\w+|tool-\d+)" class="timeline-row', html)
    assert [row.split("-")[0] for row in rows] == ["model", "tool", "model"]  # in order
    row = html[html.index(f'id="{rows[-1]}"') :]
    row = row[: row.index("</li>")]
    assert re.search(r'<time class="started-at muted" datetime="[^"]+">\d\d:\d\d:\d\d</time>', row)
    assert re.search(r'<span class="duration">\d+ ms</span>', row)
    assert "150 in / 30 out tokens" in row
    # The places are the money filter's (by magnitude): the amount is what it is.
    assert re.search(r'<span class="cost">\$0\.00420*</span>', row)
    tool_row = html[html.index(f'id="{rows[1]}"') :]
    assert re.search(r'<time class="started-at muted" datetime="[^"]+">', tool_row)


def test_a_model_call_shows_live_as_it_starts_and_as_it_ends() -> None:
    started = {"call_id": "c1", "step": 2, "model": "m via p", "phase": "started",
               "started_at": "2026-12-03T18:00:05+00:00"}  # fmt: skip
    finished = {"call_id": "c1", "step": 2, "model": "m via p", "phase": "finished",
                "outcome": "stopped", "duration_ms": 900, "error": "Stopped by ann."}  # fmt: skip

    appended = render_event(7, StreamEvent.Type.MODEL_CALL, started, perms=NO_PERMISSIONS)
    replaced = render_event(7, StreamEvent.Type.MODEL_CALL, finished, perms=NO_PERMISSIONS)

    assert appended.strip().startswith('<div hx-swap-oob="beforeend:#timeline">')
    assert '<li id="model-call-c1" class="timeline-row model-row">' in appended
    assert ">streaming</span>" in appended
    assert replaced.strip().startswith('<span id="model-call-c1-outcome"')
    assert 'hx-swap-oob="true"' in replaced
    assert 'stopped mid-answer · <span class="duration">900 ms</span>' in replaced


def test_each_steps_reply_is_set_apart_from_the_one_before(
    operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Step 1 calls a tool (no text), step 2 answers: its first piece says its step.
    turns = [CallTool("next_page", {}), Reply("Found it.")]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)
    tokens = [e.data for e in events_of(run, StreamEvent.Type.TOKEN)]
    assert tokens[0]["step"] == 2
    assert all("step" not in data for data in tokens[1:])

    live = render_event(run.pk, StreamEvent.Type.TOKEN, {"text": "B", "step": 3},
                        perms=NO_PERMISSIONS)  # fmt: skip
    assert live == (
        '<span hx-swap-oob="beforeend:#run-reply">'
        '<span class="reply-step" data-step="3">Step 3</span>B</span>'
    )
    later = render_event(run.pk, StreamEvent.Type.TOKEN, {"text": "C"}, perms=NO_PERMISSIONS)
    assert later == '<span hx-swap-oob="beforeend:#run-reply">C</span>'


def test_the_page_folds_the_steps_replies_with_a_separator_between_them(
    client: Client, operator: Any
) -> None:
    from tests.chat.test_views import add_events, make_run, make_session

    run = make_run(make_session(operator), status=RunStatus.STOPPED)
    add_events(
        run,
        [
            ("token", {"text": "Let me ", "step": 1}),
            ("token", {"text": "look."}),
            ("token", {"text": "It is <full>.", "step": 2}),
        ],
    )

    html = page_of(client, operator, run)

    reply = html[html.index('<div id="run-reply" class="reply">') :]
    reply = reply[: reply.index("</div>")]
    assert reply == (
        '<div id="run-reply" class="reply">'
        '<span class="reply-step" data-step="1">Step 1</span>Let me look.'
        '<span class="reply-step" data-step="2">Step 2</span>It is &lt;full&gt;.'
    )


def test_healthy_guardrail_counters_read_as_healthy_and_warn_only_near_their_limit() -> None:
    healthy = guardrails_context(
        {
            "loop": {"count": 1, "threshold": 5},
            "no_progress": {"count": 1, "threshold": 3},
            "repeated_failure": {"count": 0, "threshold": 3},
        }
    )
    near = guardrails_context(
        {
            "loop": {"count": 4, "threshold": 5},
            "no_progress": {"count": 2, "threshold": 3},
            "repeated_failure": {"count": 1, "threshold": 3},
        }
    )

    assert healthy["all_healthy"] is True
    assert {c["key"]: c["level"] for c in healthy["counters"]} == {
        "loop": "ok",
        "no_progress": "ok",
        "repeated_failure": "ok",
    }
    assert near["all_healthy"] is False
    assert {c["key"]: c["level"] for c in near["counters"]} == {
        "loop": "warning",
        "no_progress": "warning",
        "repeated_failure": "ok",
    }
    html = render_event(
        1,
        StreamEvent.Type.GUARDRAILS,
        {"loop": {"count": 1, "threshold": 5}, "no_progress": {"count": 1, "threshold": 3}},
        perms=NO_PERMISSIONS,
        oob=False,
    )
    assert "All clear" in html
    assert "1 / 5" not in html
    assert "1/5" not in html
    assert "no repeated call · stops at 5" in html
    assert "making progress · stops at 3" in html
    assert 'class="guardrail level-ok"' in html
    warned = render_event(
        1, StreamEvent.Type.GUARDRAILS, {"loop": {"count": 4, "threshold": 5}},
        perms=NO_PERMISSIONS, oob=False,
    )  # fmt: skip
    assert '<li id="guardrail-loop" class="guardrail level-warning">' in warned
    assert "<strong>4 of 5</strong> · stops at 5" in warned


def test_a_paused_risky_tool_awaits_approval_on_the_page_and_runs_once_granted(
    client: Client, operator: Any, operator2: Any, django_capture_on_commit_callbacks: Any
) -> None:
    turns = [CallTool("create_task", {"title": "Rotate the keys"}), Reply("Created task.")]
    run, scripted = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)
    assert run.status == RunStatus.WAITING_APPROVAL
    execution = run.tool_executions.get()

    html = page_of(client, operator, run)
    outcome = (
        f'<span id="tool-{execution.pk}-outcome" class="tool-outcome outcome-awaiting_approval">'
    )
    assert outcome + "awaiting approval</span>" in html
    assert "outcome-running" not in html
    assert 'class="status-chip status-waiting_approval">Waiting for approval</span>' in html
    assert '<strong class="status-label">Waiting for approval</strong>' in html

    with use_scripted(OFFLINE, scripted), django_capture_on_commit_callbacks(execute=True):
        decide_approval(run.pending_approval, user=operator2, approve=True)

    granted = events_of(run, StreamEvent.Type.TOOL_RESULT)[0].data
    flipped = render_event(run.pk, StreamEvent.Type.TOOL_RESULT, granted, perms=NO_PERMISSIONS)
    assert f'<span id="tool-{execution.pk}-outcome" class="tool-outcome outcome-running"' in flipped
    html = page_of(client, operator, run)
    assert f'<span id="tool-{execution.pk}-outcome" class="tool-outcome outcome-ok"' in html


def test_a_working_runs_status_carries_its_clock_origin_and_a_stopped_one_none(
    client: Client, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run, _ = run_scripted([Reply("Hi.")], user=operator, capture=django_capture_on_commit_callbacks)

    statuses = [e.data for e in events_of(run, StreamEvent.Type.STATUS)]
    origin = Decimal(str(run.started_at.timestamp())) + Decimal(str(run.paused_seconds))
    working = [s for s in statuses if s["status"] in ("thinking", "streaming")]
    assert working
    assert all(abs(Decimal(str(s["clock_since"])) - origin) < Decimal("0.01") for s in working)
    assert all("clock_since" not in s for s in statuses if s["status"] in ("idle", "stopped"))

    live = render_event(run.pk, StreamEvent.Type.STATUS, working[0], perms=NO_PERMISSIONS)
    assert re.search(r'data-clock-since="\d+\.\d{3}" data-rendered-at="\d+\.\d{3}"', live)
    html = page_of(client, operator, run)
    assert "data-clock-since" not in html  # stopped: the clock stands
    assert re.search(r'id="budget-wall_clock" data-limit="[\d.]+"', html)


def test_the_message_placeholder_names_the_registered_tools_and_only_them(
    client: Client, operator: Any
) -> None:
    from tests.chat.test_views import make_session

    names = [tool.name for tool in tools.available_tools()]
    assert "todays_spend" in names

    client.force_login(operator)
    html = client.get(reverse("chat:session", args=[make_session(operator).pk])).content.decode()

    placeholder = re.search(r'<textarea id="id_message"[^>]* placeholder="([^"]*)"', html)
    assert placeholder is not None
    named = re.findall(r"[a-z]+(?:_[a-z]+)+", placeholder.group(1))
    assert sorted(named) == sorted(n for n in names if "_" in n)
    assert "spend_today" not in html
    tools.register(tools.Tool("fresh_tool", "New.", {"type": "object"}, lambda a, c: 1))
    try:
        assert "fresh_tool" in message_placeholder()
    finally:
        tools.unregister("fresh_tool")
