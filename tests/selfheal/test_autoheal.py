from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from controlplane.models import FeatureToggle
from selfheal.autoheal import TOGGLE, evaluate_rules
from selfheal.models import AutoHealRule, AutoHealRun, PlaybookExecution, Task, TaskStatus

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(timezone.now().replace(microsecond=0))
    monkeypatch.setattr(timezone, "now", clock)
    return clock


def set_autoheal(enabled: bool) -> None:
    FeatureToggle.objects.filter(key=TOGGLE).update(enabled=enabled)
    cache.clear()  # the toggle's cache is refreshed on commit, which a test never reaches


@pytest.fixture(autouse=True)
def rules_of_our_own() -> None:
    AutoHealRule.objects.all().delete()  # the seeded default rule
    set_autoheal(True)


def rule(name: str = "queue", **fields: Any) -> AutoHealRule:
    values = {
        "finding": "task_queue",
        "severity": "critical",
        "playbook": "diagnose",
        "cooldown_minutes": 0,
        "target_cooldown_minutes": 0,
        "max_runs_per_hour": 100,
    }
    return AutoHealRule.objects.create(name=name, **{**values, **fields})


def findings(**severities: str) -> list[dict[str, Any]]:
    return [{"check": check, "severity": severity} for check, severity in severities.items()]


CRITICAL_QUEUE = findings(database="ok", task_queue="critical")


def ran(evaluation: Any) -> list[str]:
    return [d.rule for d in evaluation.ran]


def reasons(evaluation: Any) -> dict[str, str]:
    return {d.rule: d.reason for d in evaluation.decisions}


def test_a_rule_whose_finding_reaches_its_severity_runs_its_playbook(clock):
    queue = rule()
    evaluation = evaluate_rules(findings=CRITICAL_QUEUE)
    assert ran(evaluation) == ["queue"]
    [run] = AutoHealRun.objects.all()
    assert run.rule == queue
    assert run.target == "check:task_queue"
    assert run.at == clock.now
    assert run.execution is not None
    assert run.execution.trigger == PlaybookExecution.Trigger.AUTOHEAL
    assert run.execution.started_by is None
    assert evaluation.decisions[0].execution_id == run.execution.pk
    assert "1 ran a playbook" in evaluation.summary


def test_a_finding_below_the_rules_severity_runs_nothing(clock):
    rule()
    evaluation = evaluate_rules(findings=findings(task_queue="warning"))
    assert ran(evaluation) == []
    assert reasons(evaluation)["queue"] == "task_queue is warning, below critical."
    assert not AutoHealRun.objects.exists()


def test_a_rule_fires_on_a_finding_above_its_severity(clock):
    rule(severity="warning")
    assert ran(evaluate_rules(findings=CRITICAL_QUEUE)) == ["queue"]


def test_a_disabled_rule_is_not_evaluated(clock):
    rule(enabled=False)
    evaluation = evaluate_rules(findings=CRITICAL_QUEUE)
    assert evaluation.decisions == []
    assert evaluation.summary == "No enabled auto-heal rules."


def test_a_rule_waits_out_its_cooldown(clock):
    rule(cooldown_minutes=30)
    assert ran(evaluate_rules(findings=CRITICAL_QUEUE)) == ["queue"]
    clock.advance(minutes=29)
    evaluation = evaluate_rules(findings=CRITICAL_QUEUE)
    assert ran(evaluation) == []
    assert "In the rule's cooldown until" in reasons(evaluation)["queue"]
    clock.advance(minutes=1)
    assert ran(evaluate_rules(findings=CRITICAL_QUEUE)) == ["queue"]
    assert AutoHealRun.objects.count() == 2


def test_a_target_waits_out_its_cooldown_whichever_rule_ran_on_it(clock):
    rule("a first", target_cooldown_minutes=60)
    rule("b second", target_cooldown_minutes=60, playbook="repair")
    evaluation = evaluate_rules(findings=CRITICAL_QUEUE)
    assert ran(evaluation) == ["a first"]
    assert "check:task_queue is in its cooldown until" in reasons(evaluation)["b second"]
    clock.advance(minutes=59)
    assert ran(evaluate_rules(findings=CRITICAL_QUEUE)) == []
    clock.advance(minutes=1)
    assert ran(evaluate_rules(findings=CRITICAL_QUEUE)) == ["a first"]


def test_a_rule_on_another_target_is_not_held_by_that_cooldown(clock):
    rule("queue", target_cooldown_minutes=60)
    rule("workers", finding="worker_heartbeats", target_cooldown_minutes=60)
    evaluation = evaluate_rules(
        findings=findings(task_queue="critical", worker_heartbeats="critical")
    )
    assert ran(evaluation) == ["queue", "workers"]


def test_a_rule_runs_at_most_its_maximum_per_hour(clock):
    rule(max_runs_per_hour=2)
    assert ran(evaluate_rules(findings=CRITICAL_QUEUE)) == ["queue"]
    clock.advance(minutes=20)
    assert ran(evaluate_rules(findings=CRITICAL_QUEUE)) == ["queue"]
    clock.advance(minutes=20)
    evaluation = evaluate_rules(findings=CRITICAL_QUEUE)
    assert ran(evaluation) == []
    assert reasons(evaluation)["queue"] == "Reached its maximum of 2 run(s) per hour."
    clock.advance(minutes=21)  # the first run is now more than an hour old
    assert ran(evaluate_rules(findings=CRITICAL_QUEUE)) == ["queue"]
    assert AutoHealRun.objects.count() == 3


def test_with_the_toggle_off_rules_are_evaluated_and_nothing_runs(clock):
    set_autoheal(False)
    rule()
    evaluation = evaluate_rules(findings=CRITICAL_QUEUE)
    assert not evaluation.enabled
    assert evaluation.ran == []
    [decision] = evaluation.decisions
    assert decision.fires
    assert decision.reason == "Would run 'diagnose', but auto-heal is off."
    assert evaluation.summary.startswith("Auto-heal is off (toggle 'autoheal.enabled')")
    assert "1 would fire, nothing ran" in evaluation.summary
    assert not AutoHealRun.objects.exists()
    assert not PlaybookExecution.objects.exists()
    assert evaluation.as_dict()["ran"] == 0


def test_a_rule_naming_an_unknown_playbook_runs_nothing_and_says_why(clock):
    rule(playbook="reboot")
    evaluation = evaluate_rules(findings=CRITICAL_QUEUE)
    assert ran(evaluation) == []
    assert "No playbook named 'reboot'" in reasons(evaluation)["queue"]


def test_the_seeded_rule_repairs_a_stuck_queue_from_a_fresh_diagnosis(clock):
    rule(playbook="repair")
    tasks = [
        Task.objects.create(title=f"t{n}", kind="noop", status=TaskStatus.BLOCKED)
        for n in range(10)
    ]
    evaluation = evaluate_rules()
    assert {f["check"]: f["severity"] for f in evaluation.findings}["task_queue"] == "critical"
    assert ran(evaluation) == ["queue"]
    assert set(
        Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("status", flat=True)
    ) == {TaskStatus.PENDING}
    execution = PlaybookExecution.objects.get(playbook="repair")
    assert execution.trigger == PlaybookExecution.Trigger.AUTOHEAL
    assert len(execution.snapshots) == 10
