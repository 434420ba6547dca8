"""Tests of the self-heal app. The engine's factories live here, for every test file."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from selfheal import engine
from selfheal.models import Task, Worker


def make_worker(
    name: str = "worker-1", capabilities: Iterable[str] = (), *, online: bool = True
) -> tuple[Worker, str]:
    """A registered worker and its raw token; online means it just sent a heartbeat."""
    worker, raw = Worker.register(name, list(capabilities))
    if online:
        engine.heartbeat(worker)
    return worker, raw


def make_task(title: str = "Rotate the keys", kind: str = "noop", **fields: Any) -> Task:
    return engine.create_task(title, kind, **fields)


def stored(task: Task) -> Task:
    return Task.objects.get(pk=task.pk)


def expire_lease(task: Task, seconds_ago: int = 1) -> None:
    """Move time past the task's lease, as if its worker died."""
    Task.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=seconds_ago)
    )


def silence(worker: Worker, seconds: float) -> None:
    """The worker's last heartbeat was this long ago."""
    Worker._base_manager.filter(pk=worker.pk).update(
        last_heartbeat=timezone.now() - timedelta(seconds=seconds)
    )


def age(task: Task, seconds: float) -> None:
    """The task has been in its status this long."""
    Task.objects.filter(pk=task.pk).update(updated_at=timezone.now() - timedelta(seconds=seconds))
