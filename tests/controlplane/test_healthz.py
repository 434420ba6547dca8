from __future__ import annotations

from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import connection

from controlplane import health

pytestmark = pytest.mark.django_db

UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"


def test_it_reports_every_part_up_without_a_login(client: Any) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "status": "ok",
        "database": {"ok": True},
        "channel_layer": {"ok": True},
        "broker": {"ok": True},
    }


def test_it_shows_staff_the_detail_of_each_part(client: Any, observer: Any) -> None:
    client.force_login(observer)
    response = client.get("/healthz")

    assert response.status_code == 200
    report = response.json()
    for part in ("database", "channel_layer", "broker"):
        assert report[part]["name"] == part
        assert report[part]["ok"] is True
        assert report[part]["latency_ms"] >= 0
    assert report["database"]["detail"] == connection.vendor
    assert report["channel_layer"]["detail"] == type(get_channel_layer()).__name__


def test_it_is_never_cached(client: Any) -> None:
    response = client.get("/healthz")
    assert "no-store" in response["Cache-Control"]


def test_it_answers_503_and_marks_the_broker_down_when_the_broker_is_unreachable(
    client: Any, settings: Any, observer: Any
) -> None:
    settings.CELERY_BROKER_URL = UNREACHABLE_BROKER
    client.force_login(observer)

    response = client.get("/healthz")

    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "down"
    assert report["broker"]["ok"] is False
    assert "127.0.0.1:1" in report["broker"]["detail"]
    assert report["database"]["ok"] is True
    assert report["channel_layer"]["ok"] is True


def test_it_answers_503_and_marks_the_database_down_when_the_database_fails(
    client: Any, monkeypatch: Any, observer: Any
) -> None:
    client.force_login(observer)

    def database_down() -> str:
        raise ConnectionError("database is gone")

    monkeypatch.setattr(health, "_database", database_down)

    response = client.get("/healthz")

    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "down"
    assert report["database"] == {
        "name": "database",
        "ok": False,
        "detail": "ConnectionError: database is gone",
        "latency_ms": report["database"]["latency_ms"],
    }
    assert report["channel_layer"]["ok"] is True
    assert report["broker"]["ok"] is True


def test_it_answers_503_and_marks_the_channel_layer_down_without_a_layer(
    client: Any, monkeypatch: Any, observer: Any
) -> None:
    client.force_login(observer)
    monkeypatch.setattr(health, "get_channel_layer", lambda: None)

    response = client.get("/healthz")

    assert response.status_code == 503
    report = response.json()
    assert report["channel_layer"]["ok"] is False
    assert "no channel layer configured" in report["channel_layer"]["detail"]
    assert report["database"]["ok"] is True


def test_it_refuses_anything_but_get(client: Any) -> None:
    assert client.post("/healthz").status_code == 405


def test_it_keeps_error_text_from_anonymous_callers(client: Any, settings: Any) -> None:
    settings.CELERY_BROKER_URL = UNREACHABLE_BROKER

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["broker"] == {"ok": False}
    assert b"127.0.0.1:1" not in response.content
