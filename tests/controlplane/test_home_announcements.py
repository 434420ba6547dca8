"""What announces itself to Home, on commit, and how a hot producer is coalesced:
the first announcement at once, the rest of an interval as one at its end."""

from __future__ import annotations

from typing import Any

import pytest

from chat.events import emit_many
from controlplane import audit, live
from controlplane.live import HOME_GROUP, Coalescer
from controlplane.models import FeatureToggle
from routing import calls
from routing.call_refusals import NotRoutable
from routing.calls import CallContext
from tests.chat.runs import make_run

MESSAGES = [{"role": "user", "content": "Summarize the deploy logs"}]


class FakeTimer:
    """A timer that fires when the test says so."""

    started: list[FakeTimer] = []

    def __init__(self, wait: float, function: Any, args: tuple[Any, ...]) -> None:
        self.wait, self.function, self.args = wait, function, args
        self.daemon = False

    def start(self) -> None:
        FakeTimer.started.append(self)

    def fire(self) -> None:
        self.function(*self.args)


@pytest.fixture
def coalescer(monkeypatch: pytest.MonkeyPatch) -> tuple[Coalescer, list[float]]:
    now = [100.0]
    FakeTimer.started = []
    made = Coalescer(seconds=1.0)
    monkeypatch.setattr(made, "clock", lambda: now[0])
    monkeypatch.setattr(made, "timer", FakeTimer)
    return made, now


@pytest.mark.django_db
def test_the_first_announcement_goes_out_once_the_transaction_commits(
    coalescer: Any, announced: list[tuple[str, str]], django_capture_on_commit_callbacks: Any
) -> None:
    made, _ = coalescer

    with django_capture_on_commit_callbacks() as callbacks:
        made.announce(HOME_GROUP, "home.spend")
        assert announced == []
    for callback in callbacks:
        callback()

    assert announced == [(HOME_GROUP, "home.spend")]


@pytest.mark.django_db
def test_announcements_within_the_interval_become_one_at_its_end(
    coalescer: Any, announced: list[tuple[str, str]], django_capture_on_commit_callbacks: Any
) -> None:
    made, now = coalescer
    with django_capture_on_commit_callbacks(execute=True):
        made.announce(HOME_GROUP, "home.spend")
    now[0] += 0.25
    for _ in range(50):
        with django_capture_on_commit_callbacks(execute=True):
            made.announce(HOME_GROUP, "home.spend")

    assert announced == [(HOME_GROUP, "home.spend")]
    [timer] = FakeTimer.started
    assert timer.wait == pytest.approx(0.75)

    now[0] += 0.75
    timer.fire()

    assert announced == [(HOME_GROUP, "home.spend")] * 2


@pytest.mark.django_db
def test_each_kind_of_announcement_has_its_own_interval(
    coalescer: Any, announced: list[tuple[str, str]], django_capture_on_commit_callbacks: Any
) -> None:
    made, _ = coalescer
    with django_capture_on_commit_callbacks(execute=True):
        made.announce(HOME_GROUP, "home.spend")
        made.announce(HOME_GROUP, "home.runs")

    assert announced == [(HOME_GROUP, "home.spend"), (HOME_GROUP, "home.runs")]
    assert FakeTimer.started == []


# --- the producers -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_runs_status_is_announced_and_its_tokens_are_not(
    operator: Any, announced: list[tuple[str, str]], django_capture_on_commit_callbacks: Any
) -> None:
    run = make_run(operator)
    announced.clear()

    with django_capture_on_commit_callbacks(execute=True):
        emit_many(run.pk, [("token", {"text": "Hel"}), ("token", {"text": "lo"})])
    assert announced == []

    with django_capture_on_commit_callbacks(execute=True):
        emit_many(run.pk, [("status", {"status": "streaming", "detail": "Replying"})])
    assert announced == [(HOME_GROUP, "home.runs")]


@pytest.mark.django_db
def test_a_change_written_to_the_audit_trail_is_announced(
    operator: Any, announced: list[tuple[str, str]], django_capture_on_commit_callbacks: Any
) -> None:
    toggle = FeatureToggle.objects.create(key="reports.weekly", enabled=True)
    announced.clear()

    with django_capture_on_commit_callbacks(execute=True):
        audit.record("toggle.changed", toggle, actor=operator)

    assert (HOME_GROUP, "home.audit") in announced


@pytest.mark.django_db
def test_every_recorded_gateway_call_is_announced_answered_or_refused(
    announced: list[tuple[str, str]], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        calls.complete(CallContext("chat"), MESSAGES, max_tokens=100)
    assert (HOME_GROUP, "home.spend") in announced

    announced.clear()
    live.home_announcements._last.clear()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(NotRoutable):
        calls.complete(CallContext("nowhere"), MESSAGES, max_tokens=100)
    assert announced == [(HOME_GROUP, "home.spend")]
