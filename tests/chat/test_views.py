"""The chat pages: who may see and do what, runs started and stopped, the mode
remembered, empty states, and a long run rendered in a bounded number of queries."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from chat.models import ChatSession, Message, Run, RunStatus, StopReason, StreamEvent
from chat.stop_reasons import explain
from tests.chat.scripted_runs import switch

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def logged_in(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def make_session(user: Any, **fields: Any) -> ChatSession:
    return ChatSession.objects.create(user=user, title=fields.pop("title", "Ops chat"), **fields)


def make_run(chat: ChatSession, message: str = "How full is the queue?", **fields: Any) -> Run:
    defaults: dict[str, Any] = {
        "mode": "normal",
        "max_steps": 10,
        "max_wall_clock_seconds": 300,
        "max_cost": Decimal("0.50"),
    }
    run = Run.objects.create(session=chat, started_by=chat.user, **(defaults | fields))
    Message.objects.create(session=chat, run=run, role=Message.Role.USER, content=message)
    return run


def add_events(run: Run, events: list[tuple[str, dict[str, Any]]]) -> None:
    start = run.next_seq
    StreamEvent.objects.bulk_create(
        StreamEvent(run=run, seq=start + i, type=kind, data=data)
        for i, (kind, data) in enumerate(events)
    )
    Run.objects.filter(pk=run.pk).update(next_seq=start + len(events))
    run.refresh_from_db()


def tool_calls(count: int) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for i in range(1, count + 1):
        events.append(
            (
                "tool_start",
                {"execution_id": i, "tool": "list_tasks", "arguments": {"n": i}, "step": i},
            )
        )
        events.append(
            (
                "tool_result",
                {
                    "execution_id": i,
                    "tool": "list_tasks",
                    "outcome": "ok" if i % 7 else "error",
                    "duration_ms": i,
                    "fingerprint": "" if i % 7 else f"fp{i:04d}",
                    "result": {"tasks": [i]} if i % 7 else None,
                    "error": "" if i % 7 else f"failure {i}",
                },
            )
        )
    return events


# -- who sees what -------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client: Client) -> None:
    response = client.get(reverse("chat:index"))

    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_an_outsider_cannot_see_chat(client: Client, outsider: Any, owner: Any) -> None:
    chat = make_session(owner)
    logged_in(client, outsider)

    assert client.get(reverse("chat:index")).status_code == 403
    assert client.get(reverse("chat:session", args=[chat.pk])).status_code == 403


def test_the_index_says_what_to_do_when_there_are_no_sessions(
    client: Client, operator: Any
) -> None:
    response = logged_in(client, operator).get(reverse("chat:index"))

    assert response.status_code == 200
    assert b"No chat sessions yet" in response.content
    assert b"Start a session" in response.content


def test_an_observer_sees_every_session_but_cannot_start_one(
    client: Client, observer: Any, operator: Any
) -> None:
    chat = make_session(operator, title="Nightly <checks>")
    make_run(chat, status=RunStatus.STOPPED, stop_reason=StopReason.COMPLETED)
    logged_in(client, observer)

    response = client.get(reverse("chat:index"))

    assert b"Nightly &lt;checks&gt;" in response.content
    assert b"Completed" in response.content
    assert b"Start a session" not in response.content
    assert client.post(reverse("chat:new_session"), {"mode": "code"}).status_code == 403


def test_an_operator_starts_a_session_in_a_mode(client: Client, operator: Any) -> None:
    response = logged_in(client, operator).post(
        reverse("chat:new_session"), {"title": "Deploy check", "mode": "ops"}
    )

    chat = ChatSession.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("chat:session", args=[chat.pk])
    assert (chat.title, chat.mode, chat.user) == ("Deploy check", "ops", operator)


def test_a_session_without_runs_says_what_to_do(client: Client, operator: Any) -> None:
    chat = make_session(operator)

    response = logged_in(client, operator).get(reverse("chat:session", args=[chat.pk]))

    assert response.status_code == 200
    assert b"Nothing has run in this session yet" in response.content
    assert b"/ws/runs/" not in response.content  # no run to watch; the session's socket only
    assert f'ws-connect="/ws/chat/sessions/{chat.pk}/"'.encode() in response.content
    assert b'id="task-queue"' in response.content


def test_an_observer_watches_a_run_without_run_or_stop_buttons(
    client: Client, observer: Any, operator: Any
) -> None:
    chat = make_session(operator)
    make_run(chat, status=RunStatus.THINKING)

    response = logged_in(client, observer).get(reverse("chat:session", args=[chat.pk]))

    assert response.status_code == 200
    assert b"ws-connect" in response.content
    assert b'id="run-form"' not in response.content
    assert b'id="stop-button"' not in response.content
    assert b"You are watching" in response.content


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("chat:run", "session"),
        ("chat:mode", "session"),
        ("chat:stop", "run"),
        ("chat:retry", "run"),
    ],
)
def test_an_observer_cannot_run_stop_retry_or_change_the_mode(
    client: Client, observer: Any, operator: Any, name: str, kwargs: str
) -> None:
    chat = make_session(operator)
    run = make_run(chat, status=RunStatus.THINKING)
    target = chat.pk if kwargs == "session" else run.pk

    response = logged_in(client, observer).post(
        reverse(name, args=[target]), {"message": "hi", "mode": "code"}
    )

    assert response.status_code == 403
    run.refresh_from_db()
    chat.refresh_from_db()
    assert (run.status, run.stop_requested, chat.mode) == (RunStatus.THINKING, False, "normal")
    assert Run.objects.count() == 1


def test_get_is_not_allowed_on_the_actions(client: Client, operator: Any) -> None:
    chat = make_session(operator)
    logged_in(client, operator)

    assert client.get(reverse("chat:run", args=[chat.pk])).status_code == 405


# -- the run page ----------------------------------------------------------------------------


def test_the_page_carries_every_panel_the_live_updates_swap(client: Client, operator: Any) -> None:
    chat = make_session(operator)
    run = make_run(chat, message="Summarise <the> queue")
    add_events(
        run,
        [
            ("status", {"status": "streaming", "detail": "Step 2: answering"}),
            ("token", {"text": "The queue "}),
            ("token", {"text": "is <empty>."}),
            *tool_calls(2),
        ],
    )

    html = logged_in(client, operator).get(reverse("chat:session", args=[chat.pk])).content.decode()

    for element_id in (
        "run-panel",
        "run-status",
        "run-budget",
        "run-guardrails",
        "run-approval",
        "why-idle",
        "stop-reason",
        "last-error",
        "task-queue",
        "run-reply",
        "timeline",
        "tool-1",
        "tool-1-outcome",
        "tool-1-result",
        "stop-button",
    ):
        assert f'id="{element_id}"' in html, element_id
    assert f'ws-connect="/ws/runs/{run.pk}/?after=7"' in html
    assert 'id="run-last-seq" data-seq="7"' in html
    assert "The queue is &lt;empty&gt;." in html
    assert "Summarise &lt;the&gt; queue" in html
    assert "hx-swap-oob" not in html  # the page renders the fragments in place
    assert 'class="run-status status-streaming is-active is-running"' in html


def test_a_stopped_run_explains_why_and_offers_the_next_action(
    client: Client, operator: Any
) -> None:
    chat = make_session(operator)
    run = make_run(chat, status=RunStatus.STOPPED, stop_reason=StopReason.MAX_STEPS)
    add_events(
        run,
        [
            ("status", {"status": "stopped", "detail": "The run used all 10 steps."}),
            ("stop_reason", explain(StopReason.MAX_STEPS, run=run)),
            ("error", {"message": "Tool list_tasks timed out"}),
        ],
    )

    html = logged_in(client, operator).get(reverse("chat:session", args=[chat.pk])).content.decode()

    assert "Step budget used up" in html
    assert "Run it again with a larger step budget (20 steps)" in html
    assert "Tool list_tasks timed out" in html
    assert f'hx-post="/chat/runs/{run.pk}/retry/"' in html
    assert "&quot;budget&quot;: &quot;max_steps&quot;, &quot;value&quot;: &quot;20&quot;" in html


def test_a_run_stopped_before_any_event_still_says_why(client: Client, operator: Any) -> None:
    chat = make_session(operator)
    make_run(chat, status=RunStatus.STOPPED, stop_reason=StopReason.WORKER_LOST)

    html = logged_in(client, operator).get(reverse("chat:session", args=[chat.pk])).content.decode()

    assert "Worker lost" in html
    assert "stopped answering" in html


def test_another_run_of_the_session_can_be_opened(client: Client, operator: Any) -> None:
    chat = make_session(operator)
    first = make_run(chat, message="first question")
    make_run(chat, message="second question")
    logged_in(client, operator)

    latest = client.get(reverse("chat:session", args=[chat.pk])).content.decode()
    older = client.get(reverse("chat:session", args=[chat.pk]), {"run": first.pk}).content.decode()

    assert 'id="run-message">second question' in latest
    assert 'id="run-message">first question' in older
    other = make_session(operator)
    stranger = make_run(other)
    wrong = client.get(reverse("chat:session", args=[chat.pk]), {"run": stranger.pk})
    assert wrong.status_code == 404


@pytest.mark.parametrize("asked", ["²", "١٢", "abc", ""])
def test_a_run_asked_for_by_something_that_is_not_a_number_shows_the_latest(
    client: Client, operator: Any, asked: str
) -> None:
    chat = make_session(operator)
    run = make_run(chat, status=RunStatus.STOPPED, stop_reason=StopReason.COMPLETED)

    response = logged_in(client, operator).get(
        reverse("chat:session", args=[chat.pk]), {"run": asked}
    )

    assert response.status_code == 200
    assert response.context["run"] == run


def test_a_run_with_500_tool_calls_renders_every_call_in_a_bounded_number_of_queries(
    client: Client, operator: Any, django_assert_max_num_queries: Any
) -> None:
    chat = make_session(operator)
    for _ in range(3):
        make_run(chat, status=RunStatus.STOPPED, stop_reason=StopReason.COMPLETED)
    run = make_run(chat, status=RunStatus.STOPPED, stop_reason=StopReason.COMPLETED)
    add_events(run, [*tool_calls(500), ("token", {"text": "Done."})])
    logged_in(client, operator)

    with django_assert_max_num_queries(12):
        response = client.get(reverse("chat:session", args=[chat.pk]))

    html = response.content.decode()
    assert len(re.findall(r'<li id="tool-\d+" class="timeline-row tool-row">', html)) == 500
    assert html.count("outcome-error") == 500 // 7
    assert 'id="tool-500-result"' in html


# -- running, stopping, retrying ------------------------------------------------------------------


def test_an_operator_starts_a_run_and_the_mode_is_remembered(client: Client, operator: Any) -> None:
    chat = make_session(operator)

    response = logged_in(client, operator).post(
        reverse("chat:run", args=[chat.pk]), {"message": "What did we spend today?", "mode": "code"}
    )

    run = Run.objects.get()
    assert response.status_code == 302
    assert response.url == f"{reverse('chat:session', args=[chat.pk])}?run={run.pk}"
    assert (run.mode, run.started_by, run.session) == ("code", operator, chat)
    assert run.messages.get().content == "What did we spend today?"
    chat.refresh_from_db()
    assert chat.mode == "code"
    page = client.get(reverse("chat:session", args=[chat.pk])).content.decode()
    assert '<option value="code" selected>' in page


def test_starting_a_run_with_htmx_swaps_in_the_new_runs_live_panel(
    client: Client, owner: Any
) -> None:
    chat = make_session(owner)

    response = logged_in(client, owner).post(
        reverse("chat:run", args=[chat.pk]), {"message": "hello", "mode": "normal"}, **HTMX
    )

    run = Run.objects.get()
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="run-panel"')
    assert f'ws-connect="/ws/runs/{run.pk}/?after=' in html
    assert 'id="run-history" hx-swap-oob="true"' in html
    assert response.headers["HX-Push-Url"] == f"/chat/{chat.pk}/?run={run.pk}"


def test_a_run_without_a_message_is_refused_next_to_the_button(
    client: Client, operator: Any
) -> None:
    chat = make_session(operator)
    logged_in(client, operator)

    plain = client.post(reverse("chat:run", args=[chat.pk]), {"message": "  ", "mode": "normal"})
    htmx = client.post(
        reverse("chat:run", args=[chat.pk]), {"message": "hi", "mode": "turbo"}, **HTMX
    )

    assert plain.status_code == 400
    assert htmx.headers["HX-Retarget"] == "#run-form-errors"
    assert b"turbo" in htmx.content
    assert not Run.objects.exists()


@pytest.mark.parametrize("toggle", ["chat.runs.enabled", "operation.agent.enabled"])
def test_a_run_started_with_its_kill_switch_off_is_refused_up_front(
    client: Client, operator: Any, toggle: str, django_capture_on_commit_callbacks: Any
) -> None:
    chat = make_session(operator)
    switch(toggle, False, django_capture_on_commit_callbacks)

    response = logged_in(client, operator).post(
        reverse("chat:run", args=[chat.pk]), {"message": "hello", "mode": "normal"}
    )

    # The product's model: nothing is opened (no run row, no message, no events),
    # rather than a run that starts and stops at once with `toggle_off`.
    assert response.status_code == 409
    assert f"The run was not started: feature toggle {toggle} is off." in response.text
    assert not Run.objects.exists()
    assert not Message.objects.exists()
    assert not StreamEvent.objects.exists()


def test_a_refused_run_offers_an_owner_the_switch_and_an_operator_the_reason(
    client: Client, operator: Any, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    switch("chat.runs.enabled", False, django_capture_on_commit_callbacks)
    link = 'href="/toggles/?toggle=chat.runs.enabled#toggle-chat.runs.enabled"'

    for person, offered in ((operator, False), (owner, True)):
        chat = make_session(person)
        response = logged_in(client, person).post(
            reverse("chat:run", args=[chat.pk]), {"message": "hello", "mode": "normal"}, **HTMX
        )
        assert response.headers["HX-Retarget"] == "#run-form-errors"
        assert "feature toggle chat.runs.enabled is off" in response.text
        assert (link in response.text) is offered
    assert not Run.objects.exists()


def test_a_retry_with_runs_switched_off_is_refused_up_front(
    client: Client, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    chat = make_session(operator)
    previous = make_run(chat, status=RunStatus.STOPPED)
    switch("chat.runs.enabled", False, django_capture_on_commit_callbacks)

    response = logged_in(client, operator).post(
        reverse("chat:retry", args=[previous.pk]), {"mode": "code"}
    )

    assert response.status_code == 409
    assert Run.objects.get() == previous


def test_a_run_starts_again_once_the_switch_is_back_on(
    client: Client, operator: Any, django_capture_on_commit_callbacks: Any
) -> None:
    chat = make_session(operator)
    switch("chat.runs.enabled", False, django_capture_on_commit_callbacks)
    switch("chat.runs.enabled", True, django_capture_on_commit_callbacks)

    response = logged_in(client, operator).post(
        reverse("chat:run", args=[chat.pk]), {"message": "hello", "mode": "normal"}
    )

    assert response.status_code == 302
    assert Run.objects.count() == 1


def test_changing_the_mode_selector_remembers_it_for_the_session(
    client: Client, operator: Any
) -> None:
    chat = make_session(operator)

    response = logged_in(client, operator).post(
        reverse("chat:mode", args=[chat.pk]), {"mode": "deep_research"}, **HTMX
    )

    assert response.status_code == 200
    chat.refresh_from_db()
    assert chat.mode == "deep_research"
    # The "remembered" badge moves to the mode chosen, without a reload.
    panel = response.content.decode()
    assert re.search(r'<details class="mode-panel" id="mode-panel" open hx-swap-oob="true"', panel)
    remembered = [row for row in panel.split('<tr class="mode-row"') if "remembered</span>" in row]
    assert len(remembered) == 1
    assert 'data-mode="deep_research"' in remembered[0]


def test_stop_stops_a_queued_run_at_once(client: Client, operator: Any) -> None:
    chat = make_session(operator)
    run = make_run(chat, status=RunStatus.IDLE)

    response = logged_in(client, operator).post(reverse("chat:stop", args=[run.pk]), **HTMX)

    assert response.status_code == 204
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.STOPPED_BY_USER)
    assert run.events.filter(type="stop_reason").exists()


def test_stop_asks_a_running_run_to_stop(client: Client, owner: Any) -> None:
    chat = make_session(owner)
    run = make_run(chat, status=RunStatus.STREAMING)

    response = logged_in(client, owner).post(reverse("chat:stop", args=[run.pk]))

    assert response.status_code == 302
    run.refresh_from_db()
    assert (run.status, run.stop_requested) == (RunStatus.STOPPING, True)


def test_retry_in_another_mode_runs_the_same_message_again(client: Client, operator: Any) -> None:
    chat = make_session(operator)
    previous = make_run(chat, message="Find the loop", status=RunStatus.STOPPED)

    response = logged_in(client, operator).post(
        reverse("chat:retry", args=[previous.pk]), {"mode": "deep_research"}, **HTMX
    )

    run = Run.objects.exclude(pk=previous.pk).get()
    assert response.status_code == 200
    assert (run.mode, run.messages.get().content) == ("deep_research", "Find the loop")
    chat.refresh_from_db()
    assert chat.mode == "deep_research"


def test_an_operator_retries_with_more_steps(client: Client, operator: Any) -> None:
    chat = make_session(operator)
    previous = make_run(chat, status=RunStatus.STOPPED, stop_reason=StopReason.MAX_STEPS)

    logged_in(client, operator).post(
        reverse("chat:retry", args=[previous.pk]),
        {"mode": "normal", "budget": "max_steps", "value": "20"},
    )

    assert Run.objects.exclude(pk=previous.pk).get().max_steps == 20


def test_only_an_owner_retries_with_a_bigger_cost_budget(
    client: Client, operator: Any, owner: Any
) -> None:
    chat = make_session(operator)
    previous = make_run(chat, status=RunStatus.STOPPED, stop_reason=StopReason.COST_BUDGET)
    raise_cost = {"mode": "normal", "budget": "max_cost", "value": "1.00"}

    refused = logged_in(client, operator).post(
        reverse("chat:retry", args=[previous.pk]), raise_cost
    )
    accepted = logged_in(Client(), owner).post(
        reverse("chat:retry", args=[previous.pk]), raise_cost
    )

    assert refused.status_code == 403
    assert accepted.status_code == 302
    assert Run.objects.exclude(pk=previous.pk).get().max_cost == Decimal("1.00")


def test_the_queue_summary_fragment_counts_open_tasks(client: Client, observer: Any) -> None:
    from selfheal.models import Task

    Task.objects.create(title="a", kind="noop")
    Task.objects.create(title="b", kind="noop", status=Task.Status.BLOCKED)

    html = logged_in(client, observer).get(reverse("chat:queue")).content.decode()

    assert "1 pending" in html
    assert "1 blocked" in html
    assert "0 running" in html
