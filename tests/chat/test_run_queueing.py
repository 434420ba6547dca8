"""Starting a run when the work queue (the Celery broker) cannot be reached: the
person is told so at once, with no 500, and no run is left waiting for a sweep."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from kombu import Connection

from chat import tasks
from chat.models import ChatSession, Message, Run, RunStatus, StopReason
from chat.runs import RunNotQueued, resume_run

# On commit, outside any transaction, as in a real request: the broker is reached in it.
pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def broker_down(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker nobody listens for: handing a task over raises what kombu raises."""
    settings.BACKGROUND_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/4"

    def unreachable(*args: Any, **kwargs: Any) -> None:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=1) as connection:
            connection.ensure_connection(max_retries=1)

    monkeypatch.setattr(tasks.run_agent, "apply_async", unreachable)


def test_a_run_the_queue_cannot_take_is_refused_and_nothing_is_left(
    client: Client, operator: Any, broker_down: None
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Ops")
    client.force_login(operator)

    plain = client.post(reverse("chat:run", args=[chat.pk]), {"message": "Hi", "mode": "normal"})
    htmx = client.post(
        reverse("chat:run", args=[chat.pk]), {"message": "Hi", "mode": "normal"}, **HTMX
    )

    assert plain.status_code == 503
    assert "work queue could not be reached" in plain.content.decode()
    assert "the run was not started" in plain.content.decode()
    assert htmx.headers["HX-Retarget"] == "#run-form-errors"
    assert "try again in a moment" in htmx.content.decode()
    assert not Run.objects.exists()
    assert not Message.objects.exists()


def test_a_retry_the_queue_cannot_take_is_refused_too(
    client: Client, operator: Any, broker_down: None
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Ops")
    previous = Run.objects.create(
        session=chat,
        started_by=operator,
        mode="normal",
        status=RunStatus.STOPPED,
        max_steps=10,
        max_wall_clock_seconds=300,
        max_cost=Decimal("0.50"),
    )
    Message.objects.create(session=chat, run=previous, role=Message.Role.USER, content="Again")
    client.force_login(operator)

    response = client.post(reverse("chat:retry", args=[previous.pk]), {"mode": "code"})

    assert response.status_code == 503
    assert list(Run.objects.values_list("pk", flat=True)) == [previous.pk]


def test_a_resumed_run_the_queue_cannot_take_is_stopped_saying_why(
    operator: Any, broker_down: None
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Ops")
    run = Run.objects.create(
        session=chat,
        started_by=operator,
        mode="normal",
        status=RunStatus.WAITING_APPROVAL,
        max_steps=10,
        max_wall_clock_seconds=300,
        max_cost=Decimal("0.50"),
    )

    with pytest.raises(RunNotQueued):
        resume_run(run)

    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.WORKER_LOST)
    assert "work queue could not be reached" in run.last_error
