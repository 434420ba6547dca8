from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from controlplane.audit import AuditedModel


class PlaybookExecution(models.Model):
    """One run of a playbook: what it found, what it did (or would do), and the
    snapshot of every row it changed, taken before the change, for rollback."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        NEEDS_APPROVAL = "needs_approval", "Needs approval"
        ROLLED_BACK = "rolled_back", "Rolled back"

    class Trigger(models.TextChoices):
        MANUAL = "manual"
        AUTOHEAL = "autoheal", "Auto-heal rule"
        COMMAND = "command"
        WORKER = "worker"

    playbook = models.CharField(max_length=50, db_index=True)
    dry_run = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    findings = models.JSONField(default=list, blank=True)
    actions = models.JSONField(default=list, blank=True)
    snapshots = models.JSONField(
        default=list, blank=True, help_text="[{model, pk, fields}] as they were before the change."
    )
    verification = models.JSONField(default=dict, blank=True)
    summary = models.TextField(blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    rolled_back_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        permissions = [
            ("run_playbook", "Can run diagnosis and repair playbooks"),
            ("rollback_execution", "Can roll back a playbook execution"),
        ]

    def __str__(self) -> str:
        return f"{self.playbook} #{self.pk} ({self.status})"

    @property
    def worst_severity(self) -> str:
        """The worst of what it found before acting (see `severity_now` for after)."""
        order = {"ok": 0, "warning": 1, "critical": 2}
        worst = max((order.get(f.get("severity"), 0) for f in self.findings), default=0)
        return {0: "ok", 1: "warning", 2: "critical"}[worst]

    @property
    def verified_findings(self) -> list[dict[str, Any]] | None:
        """The diagnosis a repair ran after its changes; None when it did not verify
        (a diagnosis, a dry run, a failure before verifying)."""
        verification = self.verification or {}
        checks = verification.get("checks")
        if self.dry_run or not checks:
            return None
        if verification.get("findings"):
            return list(verification["findings"])
        # Recorded before verifications kept whole findings: what the checks say.
        return [
            {"check": c["check"], "severity": c["after"], "summary": c.get("summary", "")}
            for c in checks
        ]

    @property
    def severity_now(self) -> str:
        """The worst severity as the execution left the system: after a repair's
        changes when it verified them, else what it found."""
        verified = self.verified_findings
        if verified is None:
            return self.worst_severity
        order = {"ok": 0, "warning": 1, "critical": 2}
        worst = max((order.get(str(f.get("severity")), 0) for f in verified), default=0)
        return {0: "ok", 1: "warning", 2: "critical"}[worst]

    @property
    def can_roll_back(self) -> bool:
        return (
            not self.dry_run
            and bool(self.snapshots)
            and self.status
            in (self.Status.SUCCEEDED, self.Status.NEEDS_APPROVAL, self.Status.FAILED)
        )


class AutoHealRule(AuditedModel):
    """When a diagnosis finding reaches a severity, run a playbook (within limits)."""

    class Severity(models.TextChoices):
        WARNING = "warning"
        CRITICAL = "critical"

    name = models.CharField(max_length=100, unique=True)
    finding = models.CharField(
        max_length=50, help_text="The diagnosis check to watch, e.g. task_queue."
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.CRITICAL)
    playbook = models.CharField(max_length=50, default="repair")
    cooldown_minutes = models.PositiveIntegerField(default=30)
    target_cooldown_minutes = models.PositiveIntegerField(
        default=60, help_text="Minimum gap between runs for the same target (e.g. the same task)."
    )
    max_runs_per_hour = models.PositiveIntegerField(default=3)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AutoHealRun(models.Model):
    """A rule firing: when, for which target, and the execution it started."""

    rule = models.ForeignKey(AutoHealRule, on_delete=models.CASCADE, related_name="runs")
    target = models.CharField(max_length=200, blank=True)
    execution = models.ForeignKey(
        PlaybookExecution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.rule} at {self.at:%Y-%m-%d %H:%M}"
