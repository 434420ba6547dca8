"""Drives the gateway's ASGI application (`routing.gateway_asgi`) with the messages
an ASGI server would send it, for test_gateway_asgi.py and test_gateway_threads.py.

The logic runs through asgiref's thread-sensitive `sync_to_async` (as
`gateway_client.py` does), so it shares the test's transaction, unless a test puts
it on the gateway's own pool threads, as in production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from controlplane.money import dumps_exact, loads_exact
from routing.calls import CALLER_WENT_AWAY
from routing.gateway_asgi import GatewayApplication
from routing.models import (
    AIModel,
    Budget,
    BudgetDay,
    OperationLog,
    Provider,
    Reservation,
    Route,
    ServiceKey,
)
from tests.routing.openai_server import OpenAIServer, Stream, chunk, usage_chunk

CHAT_URL = "/v1/chat/completions"
MODELS_URL = "/v1/models"
HELLO = [{"role": "user", "content": "Hello there"}]
SEED = import_module("routing.migrations.0002_seed_catalog_policies_routes")


def _thread_sensitive(function: Callable[[], Any]) -> Any:
    return sync_to_async(function, thread_sensitive=True)()


# The logic on the test's thread, inside its transaction.
IN_TEST_TRANSACTION = GatewayApplication(run_sync=_thread_sensitive)


class Client:
    """One HTTP exchange as an ASGI server plays it: `requests` are the messages the
    client sends (its body), then it waits for the answer; with `leave_after`, it
    goes away (`http.disconnect`) once it has that many body chunks."""

    def __init__(self, requests: list[dict[str, Any]], *, leave_after: int | None = None) -> None:
        self.requests = list(requests)
        self.leave_after = leave_after
        self.sent: list[dict[str, Any]] = []
        self.chunks = 0
        self.left_at: float | None = None
        self._leave: asyncio.Event | None = None

    def _leave_event(self) -> asyncio.Event:
        if self._leave is None:
            self._leave = asyncio.Event()
        return self._leave

    async def receive(self) -> dict[str, Any]:
        if self.requests:
            return self.requests.pop(0)
        if self.leave_after is None:
            await asyncio.Event().wait()  # stays until the answer ends
        await self._leave_event().wait()
        self.left_at = time.monotonic()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.chunks += 1
            if self.leave_after is not None and self.chunks >= self.leave_after:
                self._leave_event().set()

    @property
    def status(self) -> int:
        assert self.sent[0]["type"] == "http.response.start"
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.sent[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def finished(self) -> bool:
        """Whether the answer was ended (a last body message without more_body)."""
        last = self.sent[-1] if self.sent else {}
        return last.get("type") == "http.response.body" and not last.get("more_body", False)

    def error(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/json"
        return loads_exact(self.body)["error"]


def scope(
    path: str,
    method: str = "POST",
    *,
    host: str = "localhost",
    scheme: str = "http",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", host.encode())]
        + [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()],
        "client": ("10.1.2.3", 50123),
        "server": ("127.0.0.1", 8000),
    }


def body_of(payload: Any) -> list[dict[str, Any]]:
    """The request messages of a whole body sent at once."""
    data = payload if isinstance(payload, bytes) else dumps_exact(payload).encode()
    return [{"type": "http.request", "body": data, "more_body": False}]


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}", "Content-Type": "application/json"}


def serve(
    request_scope: dict[str, Any],
    requests: list[dict[str, Any]] | None = None,
    *,
    app: GatewayApplication = IN_TEST_TRANSACTION,
    leave_after: int | None = None,
) -> Client:
    client = Client(body_of({}) if requests is None else requests, leave_after=leave_after)
    async_to_sync(app)(request_scope, client.receive, client.send)
    return client


def chat(raw: str, payload: Any = None, **scope_args: Any) -> Client:
    headers = {**bearer(raw), **scope_args.pop("headers", {})}
    return serve(
        scope(CHAT_URL, headers=headers, **scope_args),
        body_of({"messages": HELLO} if payload is None else payload),
    )


def assert_nothing_ran(key: ServiceKey) -> None:
    """The gateway's logic did not run: no log row, no reservation, no ledger, and
    the key was not even marked used."""
    assert not OperationLog.objects.exists()
    assert not Reservation.objects.exists()
    assert not BudgetDay.objects.exists()
    key.refresh_from_db()
    assert key.last_used_at is None


def compatible_model(server: OpenAIServer, model_id: str, name: str = "upstream") -> AIModel:
    provider = Provider.objects.create(
        name=name, kind=Provider.Kind.COMPATIBLE, base_url=server.url, timeout_seconds=5
    )
    return AIModel.objects.create(
        provider=provider,
        model_id=model_id,
        context_length=128_000,
        price_prompt=Decimal("0.000001"),
        price_completion=Decimal("0.000002"),
    )


def route_chat_to(model: AIModel) -> None:
    route = Route.objects.get(operation="chat")
    route.primary_model = model
    route.save()


SLOW_EVENTS = 30
EVENT_DELAY = 0.05
# After these events the upstream sends nothing more for a minute: a gateway that did
# not close the stream as soon as its client left would still be waiting on it.
EVENTS_BEFORE_THE_PAUSE = 4


def slow_stream(model_id: str) -> Stream:
    events: list[dict[str, Any] | str] = [chunk("", role="assistant", model=model_id)]
    events += [chunk(f"word{n} ", model=model_id) for n in range(SLOW_EVENTS)]
    events += [chunk(finish_reason="stop", model=model_id), usage_chunk(model=model_id)]
    return Stream(
        tuple(events), event_delay=EVENT_DELAY, pause_after=EVENTS_BEFORE_THE_PAUSE, pause=60
    )


def assert_closed_as_left_mid_stream(answer: Client, budget: Budget) -> None:
    # The client left after two events: the stream was not played to its end (the
    # upstream pauses for a minute after four) and the answer was not ended after the
    # client left.
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/event-stream"
    assert 2 <= answer.chunks <= EVENTS_BEFORE_THE_PAUSE
    assert not answer.finished
    assert answer.left_at is not None
    # Closed at once: settled and logged before the application returned.
    row = OperationLog.objects.get()
    assert (row.status, row.error, row.stream) == ("cancelled", CALLER_WENT_AWAY, True)
    assert row.model_used == "acme/slow"
    assert row.request_id == answer.headers["x-request-id"]
    reservation = Reservation.objects.get(request_id=row.request_id)
    assert reservation.status == Reservation.Status.SETTLED
    assert reservation.actual == row.cost
    assert row.cost > 0  # what was generated is paid for
    ledger = BudgetDay.objects.get(budget=budget)
    assert (ledger.reserved, ledger.spent) == (0, row.cost)
