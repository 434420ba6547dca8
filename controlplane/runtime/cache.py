"""The Redis cache, with one connection pool per process.

Django keeps a cache object per thread or async context, and its Redis client
builds its connection pools lazily per object; under daphne each request may run
on a new thread, so every request opened new Redis connections. Sharing the
client (redis-py's pools are thread-safe) keeps a handful of connections per process.

Django also builds a new `redis.Redis` object for every cache operation; with
redis-py 8 that costs more than the round trip to Redis (about 0.3 ms here, on every
toggle and routing-version read). A `redis.Redis` is thread-safe, so one per pool
serves every operation.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_clients: dict[tuple[Any, ...], RedisCacheClient] = {}
_lock = threading.Lock()


class ReusingRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client, with one `redis.Redis` per connection pool."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redis_clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        this: Any = self  # Django's private methods are not in its type stubs
        index = this._get_connection_pool_index(write)
        client = self._redis_clients.get(index)
        if client is None:
            with _lock:
                client = self._redis_clients.setdefault(
                    index, this._client(connection_pool=this._get_connection_pool(write))
                )
        return client


class SharedRedisCache(RedisCache):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        this: Any = self
        this._class = ReusingRedisCacheClient

    @property
    def _cache(self) -> RedisCacheClient:
        # Django's private attributes, read as Any: they are not in its type stubs.
        this: Any = self
        key = (tuple(this._servers), repr(sorted(this._options.items())))
        client = _clients.get(key)
        if client is None:
            with _lock:
                client = _clients.setdefault(key, this._class(this._servers, **this._options))
        return client
