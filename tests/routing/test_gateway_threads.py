"""The gateway's ASGI application on its own pool threads (production's path): their
database connections, and the routing table's cached keys and providers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.db import DatabaseError, connection, connections
from django.test.utils import CaptureQueriesContext

from controlplane.money import loads_exact
from controlplane.runtime import endpoint_threads
from controlplane.runtime.endpoint_threads import in_pool
from routing.gateway_asgi import GatewayApplication
from routing.models import (
    Budget,
    OperationLog,
    Provider,
    ServiceKey,
)
from routing.snapshots import routing_table
from tests.routing.asgi_driver import (
    CHAT_URL,
    HELLO,
    MODELS_URL,
    SEED,
    assert_closed_as_left_mid_stream,
    bearer,
    body_of,
    chat,
    compatible_model,
    route_chat_to,
    scope,
    serve,
    slow_stream,
)
from tests.routing.openai_server import Answer, OpenAIServer

# -- on the gateway's own threads (production's path) -------------------------------------


@pytest.fixture
def gateway_threads(transactional_db: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The gateway's pool, one thread, on committed data; its connection is closed
    before the test database is flushed."""
    SEED.seed(apps, None)  # a previous transactional test's flush removed it
    pool = ThreadPoolExecutor(1, thread_name_prefix="gateway-test")
    monkeypatch.setattr(endpoint_threads, "_pool", pool)
    yield
    pool.submit(connections.close_all).result()
    pool.shutdown()


def pool_connection() -> Any:
    """The database connection of the gateway's one thread, as it is between requests."""
    assert endpoint_threads._pool is not None
    return endpoint_threads._pool.submit(lambda: connection.connection).result()


def test_on_the_gateway_threads_a_call_commits_and_the_thread_keeps_its_connection(
    gateway_threads: None,
) -> None:
    _, raw = ServiceKey.issue(name="billing worker", service="billing")
    app = GatewayApplication()

    first = serve(scope(CHAT_URL, headers=bearer(raw)), body_of({"messages": HELLO}), app=app)
    kept = pool_connection()
    second = serve(scope(MODELS_URL, "GET", headers=bearer(raw)), body_of(b""), app=app)

    assert (first.status, second.status) == (200, 200)
    assert OperationLog.objects.get().request_id == first.headers["x-request-id"]
    assert kept is not None
    assert pool_connection() is kept


def test_on_the_gateway_threads_a_client_leaving_mid_stream_settles_and_logs(
    gateway_threads: None, upstream: OpenAIServer
) -> None:
    _, raw = ServiceKey.issue(name="billing worker", service="billing")
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    route_chat_to(compatible_model(upstream, "acme/slow"))  # committed: invalidated at once
    upstream.reply(slow_stream("acme/slow"))

    answer = serve(
        scope(CHAT_URL, headers=bearer(raw)),
        body_of({"messages": HELLO, "stream": True}),
        app=GatewayApplication(),
        leave_after=2,
    )

    assert_closed_as_left_mid_stream(answer, budget)


# -- the pool's database connections (`in_pool`) ----------------------------------------


@pytest.fixture
def pool_thread(db: Any) -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="gateway-test")
    yield executor
    executor.submit(connections.close_all).result()
    executor.shutdown()


def query_and_name_the_connection() -> Any:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.connection


def connection_of_thread(pool: ThreadPoolExecutor) -> Any:
    return pool.submit(lambda: connection.connection).result()


def test_after_a_successful_step_the_thread_keeps_its_connection_open(
    pool_thread: ThreadPoolExecutor,
) -> None:
    first = pool_thread.submit(in_pool, query_and_name_the_connection).result()
    assert connection_of_thread(pool_thread) is first

    second = pool_thread.submit(in_pool, query_and_name_the_connection).result()

    assert first is not None
    assert second is first


def test_after_a_failing_step_the_thread_closes_its_connection(
    pool_thread: ThreadPoolExecutor,
) -> None:
    before = pool_thread.submit(in_pool, query_and_name_the_connection).result()

    def fails() -> None:
        query_and_name_the_connection()
        raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError, match="the step failed"):
        pool_thread.submit(in_pool, fails).result()

    assert connection_of_thread(pool_thread) is None
    after = pool_thread.submit(in_pool, query_and_name_the_connection).result()
    assert after is not None
    assert after is not before


def test_a_step_that_caught_a_database_error_does_not_leave_its_connection_open(
    pool_thread: ThreadPoolExecutor,
) -> None:
    def survives_an_error() -> str:
        query_and_name_the_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM no_such_table_anywhere")
        except DatabaseError:
            return "answered anyway"
        raise AssertionError("the query should have failed")

    assert pool_thread.submit(in_pool, survives_an_error).result() == "answered anyway"

    assert connection_of_thread(pool_thread) is None
    assert pool_thread.submit(in_pool, query_and_name_the_connection).result() is not None


class _FakeConnection:
    def __init__(self, *, pool: object | None) -> None:
        self.pool = pool
        self.errors_occurred = False
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_pooled_connection_goes_back_to_its_pool_after_every_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pooled, direct = _FakeConnection(pool=object()), _FakeConnection(pool=None)

    class Connections:
        def all(self, initialized_only: bool = False) -> list[_FakeConnection]:
            assert initialized_only  # never opens a connection just to close it
            return [pooled, direct]

    monkeypatch.setattr(endpoint_threads, "connections", Connections())

    assert in_pool(lambda: "done") == "done"

    assert (pooled.closed, direct.closed) == (1, 0)


# -- the routing table's keys and providers, across the cache -----------------------------


@pytest.mark.django_db
def test_a_revoked_key_is_refused_at_once_once_the_revocation_commits(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        key, raw = ServiceKey.issue(name="old worker", service="billing")
    assert chat(raw).status == 200
    cached = routing_table()
    assert routing_table() is cached  # calls are served from the cached table

    with django_capture_on_commit_callbacks() as on_commit:
        key.revoke()
    # Until it commits no other process can see the revocation; nor does the table.
    assert routing_table() is cached
    for callback in on_commit:
        callback()  # the commit

    refused = [
        chat(raw),
        serve(scope(MODELS_URL, "GET", headers=bearer(raw)), body_of(b"")),
    ]

    assert [answer.status for answer in refused] == [401, 401]
    assert all(answer.error()["code"] == "invalid_api_key" for answer in refused)
    assert routing_table() is not cached
    assert OperationLog.objects.count() == 1


@pytest.mark.django_db
def test_a_new_key_is_accepted_at_once_once_it_commits(
    issued: tuple[ServiceKey, str], committed: Callable[[], Any]
) -> None:
    _, raw = issued
    assert chat(raw).status == 200  # the table is loaded and cached

    with committed():
        _, other = ServiceKey.issue(name="search", service="search")

    assert chat(other).status == 200
    assert list(OperationLog.objects.values_list("service", flat=True).order_by("pk")) == [
        "billing",
        "search",
    ]


@pytest.mark.django_db
def test_a_new_provider_base_url_takes_effect_at_once_once_it_commits(
    issued: tuple[ServiceKey, str], django_capture_on_commit_callbacks: Any
) -> None:
    _, raw = issued
    with OpenAIServer() as old, OpenAIServer() as new:
        with django_capture_on_commit_callbacks(execute=True):
            model = compatible_model(old, "acme/moving")
            route_chat_to(model)
        old.reply(Answer("from the old address"))
        new.reply(Answer("from the new address"))
        assert chat(raw).status == 200
        provider = Provider.objects.get(pk=model.provider_id)

        with django_capture_on_commit_callbacks() as on_commit:
            provider.base_url = new.url
            provider.save()
        assert routing_table().providers[provider.pk].base_url == old.url  # still cached
        for callback in on_commit:
            callback()  # the commit
        answer = chat(raw)

        assert answer.status == 200
        content = loads_exact(answer.body)["choices"][0]["message"]["content"]
        assert content == "from the new address"
        assert (len(old.requests), len(new.requests)) == (1, 1)


@pytest.mark.django_db
def test_a_call_on_a_warm_table_reads_neither_keys_nor_providers_from_the_database(
    issued: tuple[ServiceKey, str], upstream: OpenAIServer, committed: Callable[[], Any]
) -> None:
    _, raw = issued
    with committed():
        route_chat_to(compatible_model(upstream, "acme/warm"))
    assert chat(raw).status == 200  # loads the table and marks the key used

    with CaptureQueriesContext(connection) as queries:
        answer = chat(raw)

    assert answer.status == 200
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().startswith("SELECT")]
    for table in ("routing_servicekey", "routing_provider"):
        assert not [sql for sql in reads if f'FROM "{table}"' in sql], (table, reads)
