"""Auto-heal: rules that run a playbook when a diagnosis finding reaches a severity.

`evaluate_rules()` runs periodically. It diagnoses the system (that diagnosis is
the latest one the rules see) and, for each enabled rule whose finding is at or
above its severity, runs the rule's playbook unless one of its limits says wait:
the rule's cooldown, the cooldown of the same target (whichever rule ran on it),
or the rule's maximum runs per hour. With the toggle `autoheal.enabled` off the
rules are still evaluated, and nothing runs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.models.toggles import toggle_enabled
from selfheal.models import AutoHealRule, AutoHealRun, PlaybookExecution
from selfheal.playbooks import UnknownPlaybook, get_playbook, run_playbook
from selfheal.playbooks.diagnose import diagnose_system
from selfheal.playbooks.findings import SEVERITY_RANK

log = logging.getLogger(__name__)

TOGGLE = "autoheal.enabled"


@dataclass
class RuleDecision:
    rule_id: int
    rule: str
    finding: str
    threshold: str
    seen: str | None
    target: str
    fires: bool = False
    ran: bool = False
    reason: str = ""
    execution_id: int | None = None


@dataclass
class AutoHealEvaluation:
    enabled: bool
    summary: str = ""
    decisions: list[RuleDecision] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ran(self) -> list[RuleDecision]:
        return [d for d in self.decisions if d.ran]

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "summary": self.summary,
            "ran": len(self.ran),
            "decisions": [asdict(d) for d in self.decisions],
        }


def target_for(rule: AutoHealRule) -> str:
    """What a rule acts on, for the per-target cooldown: the check it watches."""
    return f"check:{rule.finding}"


def evaluate_rules(
    *, findings: list[dict[str, Any]] | None = None, now: datetime | None = None
) -> AutoHealEvaluation:
    """Evaluate every enabled rule against `findings` (default: a diagnosis now)."""
    now = now or timezone.now()
    enabled = toggle_enabled(TOGGLE)
    rules = list(AutoHealRule.objects.filter(enabled=True).order_by("name"))
    evaluation = AutoHealEvaluation(enabled=enabled)
    if not rules:
        evaluation.summary = "No enabled auto-heal rules."
        return evaluation
    if findings is None:
        findings = [f.as_record() for f in diagnose_system(now)]
    evaluation.findings = findings
    by_check = {f["check"]: f["severity"] for f in findings}
    for rule in rules:
        decision = RuleDecision(
            rule_id=rule.pk,
            rule=rule.name,
            finding=rule.finding,
            threshold=rule.severity,
            seen=by_check.get(rule.finding),
            target=target_for(rule),
        )
        evaluation.decisions.append(decision)
        if decision.seen is None:
            decision.reason = f"The diagnosis has no '{rule.finding}' finding."
            continue
        if SEVERITY_RANK[decision.seen] < SEVERITY_RANK[rule.severity]:
            decision.reason = f"{rule.finding} is {decision.seen}, below {rule.severity}."
            continue
        decision.fires = True
        _run_rule(rule, decision, enabled=enabled, now=now)
    firing = [d for d in evaluation.decisions if d.fires]
    if not enabled:
        evaluation.summary = (
            f"Auto-heal is off (toggle '{TOGGLE}'): {len(rules)} rule(s) evaluated, "
            f"{len(firing)} would fire, nothing ran."
        )
    else:
        evaluation.summary = (
            f"{len(rules)} rule(s) evaluated, {len(firing)} fired, "
            f"{len(evaluation.ran)} ran a playbook."
        )
    return evaluation


def _run_rule(rule: AutoHealRule, decision: RuleDecision, *, enabled: bool, now: datetime) -> None:
    try:
        get_playbook(rule.playbook)
    except UnknownPlaybook as exc:
        decision.reason = str(exc)
        return
    with transaction.atomic():
        # One evaluation at a time per rule: a second one waits here, then sees the
        # run this one records and respects the cooldown.
        AutoHealRule.objects.select_for_update().filter(pk=rule.pk).first()
        waiting = _why_wait(rule, decision.target, now)
        if waiting:
            decision.reason = waiting
            return
        if not enabled:
            decision.reason = f"Would run '{rule.playbook}', but auto-heal is off."
            return
        run = AutoHealRun.objects.create(rule=rule, target=decision.target)
        # Dated by the evaluation's clock, which the limits above were measured on.
        AutoHealRun.objects.filter(pk=run.pk).update(at=now)
    execution = run_playbook(rule.playbook, trigger=PlaybookExecution.Trigger.AUTOHEAL)
    AutoHealRun.objects.filter(pk=run.pk).update(execution=execution)
    decision.ran = True
    decision.execution_id = execution.pk
    decision.reason = (
        f"{rule.finding} is {decision.seen}: ran '{rule.playbook}' "
        f"(execution #{execution.pk}, {execution.status})."
    )
    log.info("auto-heal rule %s ran %s: execution %s", rule.name, rule.playbook, execution.pk)


def _why_wait(rule: AutoHealRule, target: str, now: datetime) -> str:
    """Why the rule may not run now, or "" when it may."""
    last = AutoHealRun.objects.filter(rule=rule).order_by("-at").values_list("at", flat=True)
    last_run = last.first()
    if last_run is not None and now - last_run < timedelta(minutes=rule.cooldown_minutes):
        until = last_run + timedelta(minutes=rule.cooldown_minutes)
        return f"In the rule's cooldown until {timezone.localtime(until):%H:%M}."
    last_on_target = (
        AutoHealRun.objects.filter(target=target).order_by("-at").values_list("at", flat=True)
    ).first()
    if last_on_target is not None and now - last_on_target < timedelta(
        minutes=rule.target_cooldown_minutes
    ):
        until = last_on_target + timedelta(minutes=rule.target_cooldown_minutes)
        return f"{target} is in its cooldown until {timezone.localtime(until):%H:%M}."
    in_last_hour = AutoHealRun.objects.filter(rule=rule, at__gt=now - timedelta(hours=1)).count()
    if in_last_hour >= rule.max_runs_per_hour:
        return f"Reached its maximum of {rule.max_runs_per_hour} run(s) per hour."
    return ""
