"""The tool registry: specs, the argument validator, risk levels, the built-in tools
(the task engine, today's spend, HTTP GET within the allowlist)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest

from chat import tools
from chat.tools import Risk, ToolContext, ToolRefused, checked_tool, parse_arguments, schema_errors
from routing.budgets import budget_day
from routing.models import Budget, BudgetDay
from routing.providers import CallTool, Reply
from selfheal import engine
from selfheal.models import Task
from tests.chat.scripted_runs import run_scripted


def call(name: str, arguments: dict[str, Any] | None = None, user: Any = None) -> Any:
    tool = checked_tool(name, arguments or {})
    return tools.run_tool(tool, arguments or {}, ToolContext(run_id=1, user=user))


# -- the registry -------------------------------------------------------------------------


def test_the_built_in_tools_are_registered_with_their_risk():
    risks = {tool.name: tool.risk for tool in tools.available_tools()}
    assert risks == {
        "create_task": Risk.RISKY,
        "http_get": Risk.SAFE,
        "list_tasks": Risk.SAFE,
        "queue_summary": Risk.SAFE,
        "todays_spend": Risk.SAFE,
    }


def test_tools_are_described_to_the_model_as_openai_functions():
    spec = tools.get_tool("http_get").spec()  # type: ignore[union-attr]
    assert spec["type"] == "function"
    assert spec["function"]["name"] == "http_get"
    assert spec["function"]["parameters"]["required"] == ["url"]
    assert [s["function"]["name"] for s in tools.tool_specs()] == sorted(
        s["function"]["name"] for s in tools.tool_specs()
    )


def test_a_call_to_an_unknown_tool_is_refused_naming_the_tools_there_are():
    with pytest.raises(ToolRefused, match=r"no tool named 'rm_rf'.*queue_summary"):
        checked_tool("rm_rf", {})


# -- the validator -------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 5},
        "status": {"type": "string", "enum": ["pending", "running"]},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        "ratio": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "note": {"type": ["string", "null"]},
    },
    "required": ["title"],
    "additionalProperties": False,
}


def test_valid_arguments_have_no_errors():
    arguments = {"title": "Fix", "status": "pending", "limit": 3, "ratio": 0.5, "tags": ["a"]}
    assert schema_errors(SCHEMA, {**arguments, "note": None}) == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({}, "arguments.title is required"),
        ({"title": 7}, "arguments.title must be of type string"),
        ({"title": ""}, "arguments.title must have at least 1 characters"),
        ({"title": "too long"}, "arguments.title must have at most 5 characters"),
        ({"title": "x", "status": "done"}, 'arguments.status must be one of "pending", "running"'),
        ({"title": "x", "limit": 0}, "arguments.limit must be at least 1"),
        ({"title": "x", "limit": 2.5}, "arguments.limit must be of type integer"),
        ({"title": "x", "limit": True}, "arguments.limit must be of type integer"),
        ({"title": "x", "ratio": "1"}, "arguments.ratio must be of type number"),
        ({"title": "x", "tags": ["a", 2]}, "arguments.tags[1] must be of type string"),
        ({"title": "x", "colour": "red"}, "arguments.colour is not an argument of this tool"),
    ],
)
def test_arguments_are_checked_against_the_schema(arguments, error):
    assert error in schema_errors(SCHEMA, arguments)


def test_every_wrong_argument_is_named_once_in_argument_order():
    errors = schema_errors(SCHEMA, {"title": 7, "limit": 0, "tags": [1, "b", 3]})

    assert errors == [
        "arguments.limit must be at least 1",
        "arguments.tags[0] must be of type string",
        "arguments.tags[2] must be of type string",
        "arguments.title must be of type string",
    ]


def test_a_tool_whose_schema_is_broken_is_refused_when_registered():
    broken = tools.Tool("broken", "Bad schema.", {"type": "objekt"}, lambda a, c: None)

    with pytest.raises(jsonschema.SchemaError):
        tools.register(broken)
    assert tools.get_tool("broken") is None


def test_arguments_must_be_a_json_object():
    assert parse_arguments('{"a": 1}') == {"a": 1}
    assert parse_arguments("") == {}
    with pytest.raises(ToolRefused, match="not valid JSON"):
        parse_arguments("{a: 1")
    with pytest.raises(ToolRefused, match="must be a JSON object"):
        parse_arguments("[1]")


# -- the task engine ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_tasks_shows_the_newest_tasks_filtered_by_status(operator):
    engine.create_task("Old", "noop")
    newest = engine.create_task("New", "noop")
    Task.objects.filter(pk=engine.create_task("Stuck", "noop").pk).update(status="blocked")

    listed = call("list_tasks", {"status": "pending"})

    assert [row["title"] for row in listed] == ["New", "Old"]
    assert listed[0]["id"] == newest.pk
    assert len(call("list_tasks", {"limit": 1})) == 1


@pytest.mark.django_db
def test_queue_summary_counts_tasks_by_status():
    for title in ("a", "b"):
        engine.create_task(title, "noop")
    Task.objects.filter(pk=engine.create_task("c", "noop").pk).update(status="blocked")

    summary = call("queue_summary")

    assert summary["pending"] == 2
    assert summary["blocked"] == 1
    assert summary["running"] == 0
    assert summary["open"] == 3


@pytest.mark.django_db
def test_create_task_creates_a_chat_task_for_the_run_as_its_user(operator):
    created = call("create_task", {"title": "Rotate keys", "priority": 5}, user=operator)

    task = Task.objects.get(pk=created["id"])
    assert (task.title, task.kind, task.priority, task.source) == (
        "Rotate keys",
        "chat.request",
        5,
        "chat",
    )
    assert task.payload == {"chat_run_id": 1}


@pytest.mark.django_db
def test_todays_spend_reports_the_budgets_and_the_total():
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("10"))
    BudgetDay.objects.create(budget=budget, day=budget_day(), limit="10", spent="2.5")

    spend = call("todays_spend")

    assert spend["day"] == budget_day().isoformat()
    assert spend["total_cost"] == "0"
    assert spend["budgets"] == [
        {
            "budget": str(budget),
            "limit": "10",
            "spent": "2.5",
            "reserved": "0",
            "remaining": "7.5",
            "percent": "25.0",
        }
    ]


# -- HTTP GET within the allowlist ---------------------------------------------------------------


# A page that does not answer until the test is done with it (a fail-safe lets it answer
# after SILENT_CAP seconds, so a client without a timeout gets a page and the test fails).
SILENT_CAP = 30.0


class Site(BaseHTTPRequestHandler):
    released: threading.Event

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.released.wait(SILENT_CAP)
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "http://elsewhere.example/")
            self.end_headers()
            return
        body = b"x" * 5000 if self.path == "/big" else b'{"status": "green"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    released = threading.Event()
    handler = type("TestSite", (Site,), {"released": released})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    released.set()
    server.shutdown()
    server.server_close()


def test_every_host_is_refused_while_the_allowlist_is_empty(site, settings):
    settings.CHAT_HTTP_ALLOWLIST = []
    with pytest.raises(ToolRefused, match=r"'127\.0\.0\.1' is not in CHAT_HTTP_ALLOWLIST"):
        call("http_get", {"url": f"{site}/status"})


def test_a_host_on_the_allowlist_is_fetched(site, settings):
    settings.CHAT_HTTP_ALLOWLIST = ["127.0.0.1"]

    page = call("http_get", {"url": f"{site}/status"})

    assert page["status"] == 200
    assert page["body"] == '{"status": "green"}'
    assert (page["truncated"], page["content_type"]) == (False, "application/json")


def test_a_large_page_is_cut_at_the_size_cap(site, settings):
    settings.CHAT_HTTP_ALLOWLIST = ["127.0.0.1"]
    settings.CHAT_HTTP_MAX_BYTES = 1000

    page = call("http_get", {"url": f"{site}/big"})

    assert (page["bytes"], page["truncated"], len(page["body"])) == (1000, True, 1000)


def test_a_slow_host_times_out(site, settings):
    settings.CHAT_HTTP_ALLOWLIST = ["127.0.0.1"]
    settings.CHAT_HTTP_TIMEOUT_SECONDS = 0.3

    # The host stays silent: only the tool's own timeout can end the call.
    with pytest.raises(Exception, match=r"(?i)timed out|timeout"):
        call("http_get", {"url": f"{site}/slow"})


def test_a_redirect_is_reported_not_followed_off_the_allowlist(site, settings):
    settings.CHAT_HTTP_ALLOWLIST = ["127.0.0.1"]

    page = call("http_get", {"url": f"{site}/moved"})

    assert (page["status"], page["location"]) == (302, "http://elsewhere.example/")


def test_only_http_urls_are_fetched(settings):
    settings.CHAT_HTTP_ALLOWLIST = ["127.0.0.1"]
    with pytest.raises(ToolRefused, match="Only http and https"):
        call("http_get", {"url": "file:///etc/passwd"})


# -- tools in a run ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_refused_http_get_in_a_run_is_a_refused_execution_with_a_fingerprint(
    operator, settings, django_capture_on_commit_callbacks
):
    settings.CHAT_HTTP_ALLOWLIST = []
    run, scripted = run_scripted(
        [CallTool("http_get", {"url": "https://evil.example/x"}), Reply("It was refused.")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
    )

    execution = run.tool_executions.get()
    assert execution.outcome == "refused"
    assert "not in CHAT_HTTP_ALLOWLIST" in execution.error
    assert run.retries_by_fingerprint == {execution.fingerprint: 1}
    assert "not in CHAT_HTTP_ALLOWLIST" in scripted.requests[1].messages[-1]["content"]
    assert run.stop_reason == "completed"


@pytest.mark.django_db
def test_a_risky_tool_with_bad_arguments_is_refused_without_asking_for_approval(
    operator, django_capture_on_commit_callbacks
):
    run, _ = run_scripted(
        [CallTool("create_task", {"title": ""}), Reply("I could not.")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
    )

    assert run.stop_reason == "completed"
    assert run.tool_executions.get().outcome == "refused"
    assert run.pending_approval is None
