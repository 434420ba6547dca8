"""Guards of `controlplane.runtime`: each piece that overrides or calls a library's
private names fails here, loudly, when an upgrade renames them or changes their
signature, instead of silently losing its speed-up (or breaking) in production.
When one fails, read controlplane/runtime/README.md for what the piece relies on."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from channels.layers import InMemoryChannelLayer
from daphne.http_protocol import WebRequest
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper
from django.db.models import Field
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host
from django.middleware.security import SecurityMiddleware
from twisted.web import http

from controlplane.runtime.cache import ReusingRedisCacheClient, SharedRedisCache
from controlplane.runtime.sqlite.base import DatabaseWrapper as RuntimeSQLiteWrapper


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


def calls(function: Callable[..., Any], call: str) -> bool:
    return call in inspect.getsource(function)


# -- sqlite/: the writer lock wraps Django's private transaction hooks ----------------

BEGIN = "_start_transaction_under_autocommit"


@pytest.mark.parametrize(
    ("name", "caller", "call"),
    [
        (
            "_start_transaction_under_autocommit",
            "set_autocommit",
            "_start_transaction_under_autocommit()",
        ),
        ("_commit", "commit", "self._commit()"),
        ("_rollback", "rollback", "self._rollback()"),
        ("_close", "close", "self._close()"),
    ],
)
def test_djangos_sqlite_backend_still_calls_the_hooks_the_writer_lock_wraps(
    name: str, caller: str, call: str
) -> None:
    hook = getattr(SQLiteWrapper, name)

    assert parameters(hook) == ["self"]
    assert calls(getattr(BaseDatabaseWrapper, caller), call)
    assert name in vars(RuntimeSQLiteWrapper)  # ours overrides exactly that name


def test_djangos_sqlite_backend_still_starts_its_transactions_with_begin() -> None:
    assert calls(SQLiteWrapper._start_transaction_under_autocommit, "BEGIN")  # type: ignore[attr-defined]


# -- cache.py: Django's Redis cache, its client and their private attributes ----------


def test_djangos_redis_cache_client_still_has_the_private_methods_the_shared_client_uses() -> None:
    assert parameters(RedisCacheClient._get_connection_pool_index) == ["self", "write"]  # type: ignore[attr-defined]
    assert parameters(RedisCacheClient._get_connection_pool) == ["self", "write"]  # type: ignore[attr-defined]
    signature = inspect.signature(RedisCacheClient.get_client)
    assert list(signature.parameters) == ["self", "key", "write"]
    assert signature.parameters["write"].kind is inspect.Parameter.KEYWORD_ONLY
    client: Any = RedisCacheClient(["redis://127.0.0.1:6379/5"])
    assert callable(client._client)  # the redis.Redis class


def test_djangos_redis_cache_still_builds_its_client_from_private_attributes() -> None:
    cache: Any = RedisCache("redis://127.0.0.1:6379/5", {})

    assert cache._class is RedisCacheClient
    assert cache._servers == ["redis://127.0.0.1:6379/5"]
    assert cache._options == {}
    assert "_cache" in vars(RedisCache)  # the per-object client the shared one replaces
    shared: Any = SharedRedisCache("redis://127.0.0.1:6379/5", {})
    assert isinstance(shared._cache, ReusingRedisCacheClient)


# -- serving.py: daphne's request class and Twisted's form-parsing switch -------------


def test_twisted_requests_still_take_the_form_parsing_switch() -> None:
    signature = inspect.signature(http.Request.__init__)

    assert signature.parameters["parsePOSTFormSubmission"].default is True


def test_daphnes_request_still_hands_its_arguments_to_twisteds_request() -> None:
    original = inspect.unwrap(WebRequest.__init__)

    assert parameters(original) == ["self", "args", "kwargs"]
    assert calls(original, "http.Request.__init__(self, *args, **kwargs)")


# -- rows.py: what a field stores, and a model instance's saved state ----------------


def test_fields_still_compute_what_save_stores_with_the_same_methods() -> None:
    assert parameters(Field.pre_save) == ["self", "model_instance", "add"]
    assert parameters(Field.get_db_prep_save) == ["self", "value", "connection"]


def test_model_state_and_backend_features_still_have_the_names_rows_sets_and_reads() -> None:
    from routing.models import OperationLog

    state = OperationLog()._state

    assert (state.adding, state.db) == (True, None)
    assert hasattr(connections["default"].features, "can_return_rows_from_bulk_insert")


# -- prepared.py: Django's private cursor wrapping, around a psycopg cursor ----------


def test_django_still_wraps_a_raw_cursor_with_prepare_cursor() -> None:
    assert parameters(BaseDatabaseWrapper._prepare_cursor) == ["self", "cursor"]  # type: ignore[attr-defined]
    assert parameters(psycopg.Cursor.__init__)[:2] == ["self", "connection"]


# -- endpoint_threads.py: the connections a pool thread tidies ------------------------


def test_connections_still_say_which_are_open_failed_or_pooled() -> None:
    assert "initialized_only" in parameters(type(connections).all)
    assert hasattr(connections["default"], "errors_occurred")
    assert "pool" in vars(PostgreSQLWrapper)  # None unless the connection is pooled


# -- http_endpoints.py: Django's host validation and security middleware --------------


def test_djangos_host_validation_functions_keep_their_signatures() -> None:
    assert parameters(split_domain_port) == ["host"]
    assert parameters(validate_host) == ["host", "allowed_hosts"]


def test_django_still_allows_the_same_local_hosts_in_debug() -> None:
    # http_endpoints.refusal copies this list, which is inside get_host().
    assert calls(HttpRequest.get_host, '[".localhost", "127.0.0.1", "[::1]"]')


def test_djangos_security_middleware_still_adds_its_headers_in_process_response() -> None:
    assert parameters(SecurityMiddleware.process_response) == ["self", "request", "response"]


# -- publisher.py: Channels' in-memory layer, whose sends are moved to its loop -------


def test_channels_in_memory_layer_keeps_the_methods_the_local_layer_overrides() -> None:
    assert parameters(InMemoryChannelLayer.receive) == ["self", "channel"]
    assert parameters(InMemoryChannelLayer.send) == ["self", "channel", "message"]
    assert parameters(InMemoryChannelLayer.group_send) == ["self", "group", "message"]
