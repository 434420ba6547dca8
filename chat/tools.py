"""The tools an agent may call: a registry of named tools, each with JSON-schema
arguments and a risk level.

A **safe** tool runs at once. A **risky** one (it changes something) pauses the run
for an approval first (`chat.loop`). Arguments are checked against the tool's
schema (JSON Schema 2020-12, by `jsonschema`) before anything runs; each error names
the argument it is about. A call that is not made (unknown tool, bad arguments, a
host off the allowlist) raises `ToolRefused`; a call that fails while running raises
anything else. Either way the loop records a failure fingerprint and tells the model.

Built in: `list_tasks`, `create_task` (risky) and `queue_summary` over the self-heal
task engine, `todays_spend` from the routing budgets and cost log, and `http_get`,
which reaches only the hosts of `settings.CHAT_HTTP_ALLOWLIST` (none by default),
within `CHAT_HTTP_TIMEOUT_SECONDS` and `CHAT_HTTP_MAX_BYTES`.

A tool may be cancelled while it runs (the run was stopped): its context's
`cancelled` event is set. `http_get` honours it at once, closing its connection
mid-request; a tool that does not is abandoned by the loop all the same
(`chat.tool_calls`), and its result, when it comes, is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.apps import apps
from django.conf import settings
from django.db.models import Count
from jsonschema import Draft202012Validator, ValidationError

from controlplane.tiers import StaffUser

APP_USER_AGENT = "controlplane-chat/1 (http_get tool)"


class Risk(StrEnum):
    SAFE = "safe"
    RISKY = "risky"


class ToolRefused(Exception):
    """The call was not made; the message says why, for the model and a person."""


class ToolCancelled(Exception):
    """The call was given up while it ran: its run was stopped."""


@dataclass(frozen=True)
class ToolContext:
    """Who the tool acts for (the run and the person who started it), and the event
    set when the call is cancelled."""

    run_id: int
    user: StaffUser
    cancelled: threading.Event = field(default_factory=threading.Event)


Handler = Callable[[dict[str, Any], ToolContext], Any]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema of the arguments object
    handler: Handler
    risk: Risk = Risk.SAFE

    @cached_property
    def validator(self) -> Draft202012Validator:
        """The arguments' validator, built once per tool."""
        return Draft202012Validator(self.parameters)

    @property
    def risky(self) -> bool:
        return self.risk == Risk.RISKY

    def spec(self) -> dict[str, Any]:
        """The tool as OpenAI-compatible models are told about it."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


_registry: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    Draft202012Validator.check_schema(tool.parameters)  # a broken schema fails here, not mid-run
    _registry[tool.name] = tool
    return tool


def unregister(name: str) -> None:
    _registry.pop(name, None)


def get_tool(name: str) -> Tool | None:
    return _registry.get(name)


def available_tools() -> list[Tool]:
    return sorted(_registry.values(), key=lambda tool: tool.name)


def tool_specs() -> list[dict[str, Any]]:
    return [tool.spec() for tool in available_tools()]


# -- calling a tool ---------------------------------------------------------------------


def parse_arguments(arguments: str | dict[str, Any] | None) -> dict[str, Any]:
    """The arguments object of a tool call, as the model wrote it (JSON text)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError as exc:
        raise ToolRefused(f"The arguments are not valid JSON: {exc}.") from exc
    if not isinstance(parsed, dict):
        raise ToolRefused("The arguments must be a JSON object.")
    return parsed


def checked_tool(name: str, arguments: dict[str, Any]) -> Tool:
    """The tool to run, once the call is known to be well formed."""
    tool = get_tool(name)
    if tool is None:
        known = ", ".join(t.name for t in available_tools()) or "none"
        raise ToolRefused(f"There is no tool named {name!r}. Tools: {known}.")
    errors = argument_errors(tool.validator, arguments)
    if errors:
        raise ToolRefused(f"Invalid arguments for {name}: " + "; ".join(errors))
    return tool


def run_tool(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> Any:
    """Run the tool; its result as plain JSON (what is stored and sent to the model)."""
    return json.loads(json.dumps(tool.handler(arguments, context), default=str))


# -- argument errors in words -------------------------------------------------------------


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """What is wrong with `value` under `schema` (empty: nothing)."""
    return argument_errors(Draft202012Validator(schema), value)


def argument_errors(validator: Draft202012Validator, value: Any) -> list[str]:
    """The validator's errors, each naming the argument it is about
    (`arguments.tags[1] must be of type string`), in argument order."""
    found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.path])
    words: list[str] = []
    for error in found:
        for sentence in _in_words(error):
            if sentence not in words:
                words.append(sentence)
    return words


def _argument(path: Iterable[Any]) -> str:
    return "arguments" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _in_words(error: ValidationError) -> list[str]:
    where, rule = _argument(error.absolute_path), error.validator
    expected: Any = error.validator_value
    instance = error.instance
    if rule == "required" and isinstance(instance, dict):
        return [f"{where}.{name} is required" for name in expected if name not in instance]
    if rule == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        return [
            f"{where}.{name} is not an argument of this tool"
            for name in instance
            if name not in known
        ]
    if rule == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        return [f"{where} must be of type {' or '.join(kinds)}"]
    if rule == "enum":
        return [f"{where} must be one of {', '.join(json.dumps(choice) for choice in expected)}"]
    sentences = {
        "minLength": f"{where} must have at least {expected} characters",
        "maxLength": f"{where} must have at most {expected} characters",
        "minimum": f"{where} must be at least {expected}",
        "maximum": f"{where} must be at most {expected}",
    }
    return [sentences.get(str(rule), f"{where}: {error.message}")]


# -- built-in tools: the task engine ----------------------------------------------------------

TASK_LIST_LIMIT = 50


def queue_summary() -> dict[str, int]:
    """Tasks per status (every status, zero included) and the open ones in all."""
    from selfheal.models import OPEN_STATUSES, Task, TaskStatus

    counts = dict(Task.objects.values_list("status").annotate(count=Count("id")).order_by())
    summary = {status: int(counts.get(status, 0)) for status in TaskStatus.values}
    summary["open"] = sum(summary[status] for status in OPEN_STATUSES)
    return summary


def _list_tasks(arguments: dict[str, Any], context: ToolContext) -> list[dict[str, Any]]:
    from selfheal.models import Task

    tasks = Task.objects.all()
    if arguments.get("status"):
        tasks = tasks.filter(status=arguments["status"])
    limit = int(arguments.get("limit", 20))
    return [
        {
            "id": task.pk,
            "title": task.title,
            "kind": task.kind,
            "status": task.status,
            "priority": task.priority,
            "attempts": task.attempts,
            "created_at": task.created_at.isoformat(),
        }
        for task in tasks.order_by("-created_at", "-id")[:limit]
    ]


# A task asked for in chat is a to-do for a person (no machine knows what "look into
# the nightly backup" means); the person marks it done on the Engine page.
CHAT_REQUEST_KIND = "chat.request"
CHAT_REQUEST_WAITS_FOR = "a person to do what was asked in chat, then mark it done"


def _create_task(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    from selfheal import engine, task_kinds
    from selfheal.engine_errors import EngineError
    from selfheal.models import Task

    kind = arguments.get("kind") or CHAT_REQUEST_KIND
    if not task_kinds.has_a_doer(kind):
        # A kind nobody does would wait forever: refuse it and say which ones exist.
        doable = ", ".join(task_kinds.known_kinds() + task_kinds.person_kinds())
        raise ToolRefused(f"No worker or person does tasks of kind '{kind}'; use one of {doable}.")
    try:
        task = engine.create_task(
            arguments["title"],
            kind,
            payload={**arguments.get("payload", {}), "chat_run_id": context.run_id},
            priority=int(arguments.get("priority", 0)),
            source=Task.Source.CHAT,
            actor=context.user,
        )
    except EngineError as exc:
        raise ToolRefused(str(exc)) from exc
    return {
        "id": task.pk,
        "title": task.title,
        "kind": task.kind,
        "status": task.status,
        "waiting_for": task.waiting_for,
    }


def _queue_summary(arguments: dict[str, Any], context: ToolContext) -> dict[str, int]:
    return queue_summary()


# -- built-in tools: spend ---------------------------------------------------------------------


def _todays_spend(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    from controlplane.money import MoneySum, dollars, exact_text
    from routing.budgets import budget_day, spend_today
    from routing.insights import day_bounds
    from routing.models import OperationLog

    day = budget_day()
    start, end = day_bounds(day)
    logged = OperationLog.objects.filter(at__gte=start, at__lt=end)
    total = logged.aggregate(total=MoneySum("cost"))["total"] or Decimal(0)
    return {
        "day": day.isoformat(),
        "total_cost": exact_text(total),
        "total_cost_text": dollars(total),
        "calls": logged.count(),
        "budgets": [
            {
                "budget": str(row.budget),
                "limit": exact_text(row.limit),
                "spent": exact_text(row.spent),
                "reserved": exact_text(row.reserved),
                "remaining": exact_text(row.remaining),
                "percent": str(row.percent) if row.percent is not None else None,
            }
            for row in spend_today()
        ],
    }


# -- built-in tools: HTTP GET within the allowlist -----------------------------------------------


def allowed_hosts() -> set[str]:
    return {
        host.strip().lower().rstrip(".") for host in settings.CHAT_HTTP_ALLOWLIST if host.strip()
    }


def _http_get(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    url = arguments["url"]
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        raise ToolRefused(f"Only http and https URLs can be fetched, not {url!r}.")
    if host not in allowed_hosts():
        raise ToolRefused(
            f"The host {host!r} is not in CHAT_HTTP_ALLOWLIST; an administrator can add it."
        )
    return _fetch(url, context.cancelled)


# How often a running GET looks at its cancel event (a stop must end a run within 2 s).
CANCEL_POLL_SECONDS = 0.1


def _fetch(url: str, cancelled: threading.Event) -> dict[str, Any]:
    """GET `url` within the time limit, given up as soon as `cancelled` is set: the
    request runs as an asyncio task of its own loop, so cancelling it closes the
    connection whatever it is waiting for (connect, headers or body)."""
    return asyncio.run(_fetch_unless_cancelled(url, cancelled))


async def _fetch_unless_cancelled(url: str, cancelled: threading.Event) -> dict[str, Any]:
    timeout = settings.CHAT_HTTP_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    fetch = asyncio.create_task(_fetch_async(url, timeout))
    while True:
        done, _ = await asyncio.wait({fetch}, timeout=CANCEL_POLL_SECONDS)
        if done:
            return fetch.result()
        why = ""
        if cancelled.is_set():
            why = "cancelled: the run was stopped"
        elif time.monotonic() > deadline:
            why = f"took longer than {timeout:g} s (timeout)"
        if why:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch
            if cancelled.is_set():
                raise ToolCancelled(f"GET {url} {why}")
            raise TimeoutError(f"GET {url} {why}")


async def _fetch_async(url: str, timeout: float) -> dict[str, Any]:
    limit = settings.CHAT_HTTP_MAX_BYTES
    body, truncated = bytearray(), False
    # No redirects: a redirect could lead off the allowlist.
    async with (
        httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
        client.stream("GET", url, headers={"User-Agent": APP_USER_AGENT}) as response,
    ):
        async for chunk in response.aiter_bytes():
            body.extend(chunk)
            if len(body) > limit:
                del body[limit:]
                truncated = True
                break
    return {
        "url": url,
        "status": response.status_code,
        "content_type": response.headers.get("content-type", ""),
        "location": response.headers.get("location", ""),
        "body": body.decode(response.encoding or "utf-8", errors="replace"),
        "bytes": len(body),
        "truncated": truncated,
    }


# -- the built-in registry --------------------------------------------------------------------

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def register_builtin_tools() -> None:
    """Called from `ChatConfig.ready()`."""
    if apps.is_installed("selfheal"):
        from selfheal.models import TaskStatus
        from selfheal.task_kinds import declare_person_kind

        declare_person_kind(CHAT_REQUEST_KIND, CHAT_REQUEST_WAITS_FOR)
        register(
            Tool(
                "list_tasks",
                "List tasks of the governance work queue, newest first.",
                {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": list(TaskStatus.values)},
                        "limit": {"type": "integer", "minimum": 1, "maximum": TASK_LIST_LIMIT},
                    },
                    "additionalProperties": False,
                },
                _list_tasks,
            )
        )
        register(
            Tool(
                "create_task",
                "Create a task in the governance work queue. By default (kind "
                f"{CHAT_REQUEST_KIND}) it is a to-do that waits for a person; another kind "
                "must be one a worker executes (e.g. playbook.run with payload "
                '{"playbook": "diagnose"}).',
                {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "minLength": 1, "maxLength": 200},
                        "kind": {"type": "string", "minLength": 1, "maxLength": 100},
                        "priority": {"type": "integer", "minimum": -100, "maximum": 100},
                        "payload": {"type": "object"},
                    },
                    "required": ["title"],
                    "additionalProperties": False,
                },
                _create_task,
                Risk.RISKY,
            )
        )
        register(
            Tool(
                "queue_summary",
                "Count the tasks of the work queue by status (pending, running, blocked, ...).",
                NO_ARGUMENTS,
                _queue_summary,
            )
        )
    register(
        Tool(
            "todays_spend",
            "Today's AI spend: the total, and each daily budget's limit, spend and remainder.",
            NO_ARGUMENTS,
            _todays_spend,
        )
    )
    register(
        Tool(
            "http_get",
            "Fetch a URL with HTTP GET (only hosts on the administrator's allowlist).",
            {
                "type": "object",
                "properties": {"url": {"type": "string", "format": "uri", "maxLength": 2000}},
                "required": ["url"],
                "additionalProperties": False,
            },
            _http_get,
        )
    )
