"""The Redis cache, with one connection pool per process.

Django keeps a cache object per thread or async context, and its Redis client
builds its connection pools lazily per object; under daphne each request may run
on a new thread, so every request opened new Redis connections. Sharing the
client (redis-py's pools are thread-safe) keeps a handful of connections per process.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_clients: dict[tuple[Any, ...], RedisCacheClient] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
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
