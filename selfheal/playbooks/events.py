"""The live event a playbook execution sends when it starts, finishes or is rolled
back: the Self-heal pages re-render their report and history on it."""

from __future__ import annotations

from controlplane.live import publish
from selfheal.engine import ENGINE_GROUP
from selfheal.models import PlaybookExecution

# Executions are published to the Self-heal pages' group, next to the engine's events.
SELFHEAL_GROUP = ENGINE_GROUP
EXECUTION_EVENT = "playbook.changed"


def publish_execution(execution: PlaybookExecution) -> None:
    publish(SELFHEAL_GROUP, EXECUTION_EVENT, execution_id=execution.pk, status=execution.status)
