"""Runs on /metrics: by status, and stopped runs by stop reason, read at scrape time."""

from __future__ import annotations

from typing import Any

import pytest

from chat.runs import request_stop
from tests.chat.runs import make_run
from tests.metrics_scrape import scrape

pytestmark = pytest.mark.django_db


def test_runs_are_counted_by_status_and_stopped_ones_by_stop_reason(operator: Any) -> None:
    make_run(operator)
    make_run(operator)
    stopped = make_run(operator)
    assert request_stop(stopped, user=operator)

    metrics = scrape()

    assert metrics.value("chat_runs", status="idle") == 2
    assert metrics.value("chat_runs", status="stopped") == 1
    assert metrics.value("chat_runs", status="thinking") == 0  # every status is written
    assert metrics.value("chat_runs_stopped", stop_reason="stopped_by_user") == 1
    assert metrics.value("chat_runs_stopped", stop_reason="completed") == 0
