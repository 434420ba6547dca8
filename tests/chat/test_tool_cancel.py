"""Stop ends a run whatever it is doing, a running tool included: the tool call is
cancelled (its row says so) and the run stops without waiting for the tool."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connection

from chat import tool_calls, tools
from chat.models import ChatSession, Run, RunStatus, StopReason, ToolExecution
from chat.runs import request_stop, start_run
from tests.chat.scripted_runs import ANY_ARGUMENTS, OFFLINE, events_of, reseed
from tests.controlplane.test_background import wait_for
from tests.scripted_providers import CallTool, Reply, ScriptedProvider, use_scripted

# Fail-safes only: a tool or page left blocked by a failing test is released after this.
FAIL_SAFE = 60.0


@pytest.fixture
def blocked_tool() -> Iterator[dict[str, threading.Event]]:
    """A safe tool that blocks until the test releases it (it never does while the run
    is being stopped): only cancelling the call can end the run before it returns."""
    events = {name: threading.Event() for name in ("entered", "released", "returned")}

    def block(arguments: dict[str, Any], context: tools.ToolContext) -> dict[str, Any]:
        events["entered"].set()
        events["released"].wait(FAIL_SAFE)
        events["returned"].set()
        return {"late": True}

    tools.register(tools.Tool("blocked", "Blocks.", ANY_ARGUMENTS, block))
    yield events
    events["released"].set()
    tools.unregister("blocked")
    assert tool_calls.wait_for_abandoned_tools(timeout=FAIL_SAFE)


@pytest.mark.django_db(transaction=True)
def test_stop_ends_a_run_while_its_tool_is_still_blocked_and_cancels_the_call(
    operator: Any, blocked_tool: dict[str, threading.Event]
) -> None:
    reseed()
    session = ChatSession.objects.create(user=operator)
    scripted = ScriptedProvider([CallTool("blocked"), Reply("never shown")])

    def work() -> None:
        try:
            start_run(session, user=operator, message="Run the slow tool", mode="normal")
        finally:
            connection.close()

    with use_scripted(OFFLINE, scripted):
        worker = threading.Thread(target=work)
        worker.start()
        try:
            assert blocked_tool["entered"].wait(30)
            run = wait_for(
                lambda: Run.objects.filter(session=session, status="tool_running").first()
            )
            assert request_stop(run, user=operator)
            wait_for(lambda: Run.objects.filter(pk=run.pk, status="stopped").exists())
            # Stopped while the tool is still blocked: the run did not wait for it.
            assert not blocked_tool["returned"].is_set()
        finally:
            blocked_tool["released"].set()
            worker.join(FAIL_SAFE)

    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.STOPPED_BY_USER)
    execution = run.tool_executions.get()
    assert execution.outcome == ToolExecution.Outcome.CANCELLED
    assert "Stopped by oscar-operator" in execution.error
    assert execution.result is None
    assert execution.fingerprint == ""
    results = [e.data for e in events_of(run, "tool_result")]
    assert [r["outcome"] for r in results] == ["cancelled"]
    assert len(scripted.requests) == 1  # the model was not asked again


class SilentPage(BaseHTTPRequestHandler):
    asked: threading.Event
    released: threading.Event

    def do_GET(self) -> None:
        self.asked.set()
        self.released.wait(FAIL_SAFE)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def silent_site() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    asked, released = threading.Event(), threading.Event()
    handler = type("Silent", (SilentPage,), {"asked": asked, "released": released})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", asked, released
    released.set()
    server.shutdown()
    server.server_close()


def test_http_get_gives_up_as_soon_as_it_is_cancelled(
    silent_site: tuple[str, threading.Event, threading.Event], settings: Any
) -> None:
    url, asked, released = silent_site
    settings.CHAT_HTTP_ALLOWLIST = ["127.0.0.1"]
    settings.CHAT_HTTP_TIMEOUT_SECONDS = FAIL_SAFE  # only the cancel can end it in time
    tool = tools.get_tool("http_get")
    assert tool is not None
    context = tools.ToolContext(run_id=1, user=None)  # type: ignore[arg-type]
    raised: list[BaseException] = []

    def call() -> None:
        try:
            tools.run_tool(tool, {"url": url}, context)
        except BaseException as exc:
            raised.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    assert asked.wait(30)
    context.cancelled.set()
    caller.join(30)

    assert not caller.is_alive()
    assert not released.is_set()  # the page never answered
    assert len(raised) == 1
    assert isinstance(raised[0], tools.ToolCancelled)
    assert "cancelled" in str(raised[0])
