"""What a gateway call reads from the cache before it runs: the routing table's
version, the call's switches and its models' cooldowns, all in one round trip
(`snapshots.read`), and still never a stale answer: a change is seen at once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.core.cache import caches
from django.test import Client

from controlplane.models import FeatureToggle
from routing import snapshots
from routing.models import OperationLog, Route, RouteFallback, ServiceKey
from routing.router import cool_down, cooldown_key
from routing.snapshots import ModelChoice
from tests.routing.openai_server import Answer, OpenAIServer
from tests.routing.test_gateway import (
    HELLO,
    Committed,
    compatible_models,
    error_of,
    post,
    route_to,
)

pytestmark = pytest.mark.django_db


class CacheReads:
    """Counts the reads of the default cache, whichever thread makes them: the calls
    made to it, not those it makes of itself (a get_many that is a loop of gets)."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, Any]] = []
        self.depth = threading.local()


@pytest.fixture
def cache_reads(monkeypatch: pytest.MonkeyPatch) -> CacheReads:
    counting = CacheReads()
    backend = type(caches["default"])
    for name in ("get", "get_many"):
        original = getattr(backend, name)

        def counted(self: Any, keys: Any, *args: Any, _original: Any = original, **kw: Any) -> Any:
            depth = getattr(counting.depth, "value", 0)
            if depth == 0:
                counting.reads.append((_original.__name__, keys))
            counting.depth.value = depth + 1
            try:
                return _original(self, keys, *args, **kw)
            finally:
                counting.depth.value = depth

        monkeypatch.setattr(backend, name, counted)
    return counting


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="billing worker", service="billing")[1]


def test_a_warm_gateway_call_reads_the_cache_once(
    client: Client, raw_key: str, cache_reads: CacheReads
) -> None:
    assert post(client, {"messages": HELLO}, raw_key).status_code == 200  # loads the table
    cache_reads.reads.clear()

    assert post(client, {"messages": HELLO}, raw_key).status_code == 200

    assert len(cache_reads.reads) == 1
    (method, keys) = cache_reads.reads[0]
    table = snapshots.routing_table()
    assert method == "get_many"
    assert set(keys) == {
        snapshots.VERSION_KEY,
        FeatureToggle.cache_key("gateway.enabled"),
        FeatureToggle.cache_key("operation.chat.enabled"),
        FeatureToggle.cache_key("routing.budgets.enforced"),
        cooldown_key(table.routes["chat"].primary.pk),
    }


def test_a_model_cooled_down_by_another_process_is_skipped_on_the_next_call(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    primary, fallback = compatible_models(upstream, "acme/primary", "acme/fallback")
    with committed():
        route_to("chat", primary, fallback)
    upstream.reply(Answer("From the fallback."), model="acme/fallback")
    assert post(client, {"messages": HELLO}, raw_key).status_code == 200  # table in memory
    upstream.requests.clear()

    cool_down(ModelChoice.of(primary))  # as another process would, in the shared cache
    response = post(client, {"messages": HELLO}, raw_key)

    assert response.status_code == 200
    assert [request.json["model"] for request in upstream.requests] == ["acme/fallback"]


def test_an_operation_switched_off_elsewhere_is_refused_on_the_next_call(
    client: Client, raw_key: str
) -> None:
    assert post(client, {"messages": HELLO}, raw_key).status_code == 200

    # Another process switched it off: its cache entry changed, no signal ran here.
    caches["default"].set(FeatureToggle.cache_key("operation.chat.enabled"), False)
    response = post(client, {"messages": HELLO}, raw_key)

    assert response.status_code == 503
    assert error_of(response)["code"] == "feature_off"
    assert OperationLog.objects.filter(status=OperationLog.Status.REFUSED).count() == 1


def test_a_changed_table_is_reloaded_and_the_new_tables_keys_are_read(
    upstream: OpenAIServer, committed: Committed
) -> None:
    first = snapshots.routing_table()
    (added,) = compatible_models(upstream, "acme/added")
    with committed():
        RouteFallback.objects.create(route=Route.objects.get(operation="chat"), model=added)
    caches["default"].set(cooldown_key(added.pk), True)
    asked_of: list[snapshots.RoutingTable] = []

    def keys(table: snapshots.RoutingTable) -> list[str]:
        asked_of.append(table)
        route = table.routes["chat"]
        return [cooldown_key(model.pk) for model in (route.primary, *route.fallbacks)]

    reading = snapshots.read(keys)

    assert reading.table is not first
    assert [m.model_id for m in reading.table.routes["chat"].fallbacks][-1] == "acme/added"
    assert asked_of == [first, reading.table]  # asked of the old table, then of the new
    assert reading.values == {cooldown_key(added.pk): True}
    assert reading.has([cooldown_key(added.pk)])
    assert not reading.has(["routing:cooldown:unknown"])


def test_a_current_table_is_read_with_its_keys_in_one_round_trip(
    cache_reads: CacheReads,
) -> None:
    table = snapshots.routing_table()
    cache_reads.reads.clear()

    reading = snapshots.read(lambda table: ["some:key"])

    assert reading.table is table
    assert cache_reads.reads == [("get_many", [snapshots.VERSION_KEY, "some:key"])]
