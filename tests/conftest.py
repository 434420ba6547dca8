from __future__ import annotations

import shutil
from typing import Any

import pytest
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache

from controlplane import live
from controlplane.tiers import Tier
from routing import reservations
from tests.personas import make_user


@pytest.fixture(autouse=True)
def _clear_cache() -> Any:
    # The cache is Redis when REDIS_URL is set and outlives each test's rollback.
    _forget_cached_values()
    # Content type ids this process remembered: an earlier transactional test's flush
    # took the rows, and a thread of this test would write an audit event under an id
    # that no longer exists.
    ContentType.objects.clear_cache()
    yield
    _forget_cached_values()
    # Ledger ids this process remembered as committed: an earlier transactional test's
    # flush took the rows, and a later budget may get the same id.
    reservations._known_ledgers.clear()


def _forget_cached_values() -> None:
    """Empty the cache, but only the cache: on Redis a FLUSHDB would also wipe the
    channel layer's keys (same database), under a live server's websockets."""
    if not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        cache.clear()
        return
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    keys = list(client.scan_iter(match=cache.make_key("*"), count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def observer(db: Any) -> Any:
    return make_user("olive-observer", Tier.OBSERVER)


@pytest.fixture
def operator(db: Any) -> Any:
    return make_user("oscar-operator", Tier.OPERATOR)


@pytest.fixture
def operator2(db: Any) -> Any:
    return make_user("opal-operator", Tier.OPERATOR)


@pytest.fixture
def owner(db: Any) -> Any:
    return make_user("wendy-owner", Tier.OWNER)


@pytest.fixture
def owner2(db: Any) -> Any:
    return make_user("walt-owner", Tier.OWNER)


@pytest.fixture
def outsider(db: Any) -> Any:
    """An active account in no tier: not staff."""
    return make_user("eve-outsider")


@pytest.fixture
def superuser(db: Any) -> Any:
    return make_user("root-admin", is_superuser=True, is_staff=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if (
        item.get_closest_marker("postgres")
        and "postgresql" not in settings.DATABASES["default"]["ENGINE"]
    ):
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # The file cache of this run (see tests/settings.py) goes with it.
    location = settings.CACHES["default"].get("LOCATION", "")
    if settings.CACHES["default"]["BACKEND"].endswith("FileBasedCache") and location:
        shutil.rmtree(location, ignore_errors=True)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What reaches the channel layer, in the order it was handed over."""
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(live, "_send", lambda group, message: sent.append((group, message)))
    # Home's coalesced announcements are not a producer's events: see `announced`.
    monkeypatch.setattr(live, "_announce", lambda group, event_type: None)
    return sent


@pytest.fixture
def announced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Home's announcements (group, event type) as they are handed to the layer, the
    coalescer's memory cleared so that the first of each goes out at once."""
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        live, "_announce", lambda group, event_type: sent.append((group, event_type))
    )
    monkeypatch.setattr(live.home_announcements, "_last", {})
    monkeypatch.setattr(live.home_announcements, "_waiting", set())
    return sent
