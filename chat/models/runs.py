from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.urls import reverse

from chat import budget_bounds
from controlplane.audit import AuditedModel
from controlplane.money import money_field
from routing.models import Mode


class RunStatus(models.TextChoices):
    IDLE = "idle"
    THINKING = "thinking"
    STREAMING = "streaming"
    TOOL_RUNNING = "tool_running", "Running a tool"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    STOPPING = "stopping"
    STOPPED = "stopped"


ACTIVE_STATUSES = (
    RunStatus.THINKING,
    RunStatus.STREAMING,
    RunStatus.TOOL_RUNNING,
    RunStatus.STOPPING,
)
WORKING_STATUSES = (RunStatus.THINKING, RunStatus.STREAMING, RunStatus.TOOL_RUNNING)

# The only moves a run can make (`chat.run_status.move_run` refuses any other). A
# working run moves between its working statuses at every step; a stop request sends it
# to stopping; an approval pauses it; only a resume sends it back to the queue.
TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.IDLE: frozenset({RunStatus.THINKING, RunStatus.STOPPED}),  # claimed, or stopped
    **{
        status: frozenset(
            {
                *WORKING_STATUSES,
                RunStatus.WAITING_APPROVAL,
                RunStatus.STOPPING,
                RunStatus.STOPPED,
            }
        )
        for status in WORKING_STATUSES
    },
    RunStatus.STOPPING: frozenset({RunStatus.STOPPED}),
    RunStatus.WAITING_APPROVAL: frozenset({RunStatus.IDLE, RunStatus.STOPPED}),  # resumed
    RunStatus.STOPPED: frozenset(),  # final: a retry is a new run
}


def sources_of(status: str) -> frozenset[str]:
    """The statuses a run may move to `status` from."""
    return frozenset(source for source, targets in TRANSITIONS.items() if status in targets)


class StopReason(models.TextChoices):
    COMPLETED = "completed"
    MAX_STEPS = "max_steps", "Step budget used up"
    WALL_CLOCK = "wall_clock", "Time budget used up"
    COST_BUDGET = "cost_budget", "Cost budget used up"
    LOOP_DETECTED = "loop_detected", "Loop detected"
    NO_PROGRESS = "no_progress", "No progress"
    REPEATED_FAILURE = "repeated_failure", "Repeated failure"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    STOPPED_BY_USER = "stopped_by_user", "Stopped by a person"
    TOGGLE_OFF = "toggle_off", "Switched off"
    PROVIDER_ERROR = "provider_error", "Model provider failed"
    WORKER_LOST = "worker_lost", "Worker lost"
    INVALID_BUDGET = "invalid_budget", "Budget out of bounds"


def status_label(status: str) -> str:
    """A run status as people read it ("Waiting for approval"): every page and live
    update names statuses through this, never by the raw value or a CSS transform."""
    return str(RunStatus(status).label) if status in RunStatus.values else status.replace("_", " ")


def stop_reason_label(reason: str) -> str:
    return (
        str(StopReason(reason).label) if reason in StopReason.values else reason.replace("_", " ")
    )


def bounded_budget_constraints(prefix: str) -> list[models.BaseConstraint]:
    """A CHECK per budget column: no path below the forms stores a value out of bounds."""
    return [
        models.CheckConstraint(
            condition=budget_bounds.in_bounds(name), name=f"{prefix}_{name}_in_bounds"
        )
        for name in budget_bounds.BUDGET_BOUNDS
    ]


class RunBudget(AuditedModel):
    """The default limits of a run in each mode (seeded from the routing policies)."""

    mode = models.CharField(max_length=20, choices=Mode.choices, unique=True)
    max_steps = models.PositiveIntegerField(
        default=10, validators=budget_bounds.validators("max_steps")
    )
    max_wall_clock_seconds = models.PositiveIntegerField(
        default=300, validators=budget_bounds.validators("max_wall_clock_seconds")
    )
    max_cost = money_field(default=Decimal("0.50"), validators=budget_bounds.validators("max_cost"))
    max_retries_per_fingerprint = models.PositiveIntegerField(
        default=3, validators=budget_bounds.validators("max_retries_per_fingerprint")
    )

    class Meta:
        ordering = ["mode"]
        constraints = bounded_budget_constraints("run_budget")

    def __str__(self) -> str:
        return f"{self.get_mode_display()} run budget"


class ChatSession(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="chat_sessions"
    )
    title = models.CharField(max_length=200, blank=True)
    mode = models.CharField(
        max_length=20,
        choices=Mode.choices,
        default=Mode.NORMAL,
        help_text="Remembered per session.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"Chat #{self.pk}"


class Run(models.Model):
    """One agent run: from a person's message until it stops, with its own budgets."""

    Status = RunStatus

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="runs")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    mode = models.CharField(max_length=20, choices=Mode.choices)
    status = models.CharField(
        max_length=20, choices=RunStatus.choices, default=RunStatus.IDLE, db_index=True
    )
    status_detail = models.CharField(max_length=300, blank=True)
    stop_reason = models.CharField(max_length=20, choices=StopReason.choices, blank=True)
    stop_requested = models.BooleanField(default=False)
    stop_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who asked a working run to stop (it stops at its next poll).",
    )
    last_error = models.TextField(blank=True)
    # Budgets (copied from the mode when the run starts, so a later change does not
    # move the goalposts of a running run) and usage.
    max_steps = models.PositiveIntegerField(validators=budget_bounds.validators("max_steps"))
    max_wall_clock_seconds = models.PositiveIntegerField(
        validators=budget_bounds.validators("max_wall_clock_seconds")
    )
    max_cost = money_field(validators=budget_bounds.validators("max_cost"))
    max_retries_per_fingerprint = models.PositiveIntegerField(
        default=3, validators=budget_bounds.validators("max_retries_per_fingerprint")
    )
    steps = models.PositiveIntegerField(default=0)
    cost = money_field(default=0)
    retries_by_fingerprint = models.JSONField(default=dict, blank=True)
    guardrails = models.JSONField(default=dict, blank=True)
    pending_approval = models.ForeignKey(
        "controlplane.Approval", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Time waiting for an approval does not count against the wall-clock budget.
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_seconds = models.FloatField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True, db_index=True)
    next_seq = models.PositiveBigIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("operate_run", "Can start, stop and retry runs"),
            ("raise_cost_budget", "Can raise a run's cost budget"),
        ]
        constraints = bounded_budget_constraints("run")

    def __str__(self) -> str:
        return f"Run #{self.pk} ({self.status})"

    def get_absolute_url(self) -> str:
        """Its chat's page, where the run streams and its approvals are decided."""
        return reverse("chat:session", args=[self.session_id])

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"
        SYSTEM = "system"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    tool_call_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class ToolExecution(models.Model):
    class Outcome(models.TextChoices):
        RUNNING = "running"
        OK = "ok"
        ERROR = "error"
        REFUSED = "refused"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        # The run was stopped while the tool ran: the loop did not wait for it, and
        # whatever it would have returned is not used.
        CANCELLED = "cancelled"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tool_executions")
    step = models.PositiveIntegerField()
    call_id = models.CharField(max_length=100, blank=True)
    tool = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.RUNNING)
    error = models.TextField(blank=True)
    fingerprint = models.CharField(max_length=64, blank=True, db_index=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return f"{self.tool} ({self.outcome})"


class StreamEvent(models.Model):
    """The run's event stream: written first, then published. `seq` is gap-free."""

    class Type(models.TextChoices):
        TOKEN = "token"  # noqa: S105 (a streamed text token, not a secret)
        STATUS = "status"
        TOOL_START = "tool_start"
        TOOL_RESULT = "tool_result"
        BUDGET = "budget"
        GUARDRAILS = "guardrails"
        APPROVAL = "approval"
        STOP_REASON = "stop_reason"
        ERROR = "error"
        MODEL_CALL = "model_call"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=20, choices=Type.choices)
    at = models.DateTimeField(auto_now_add=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="stream_event_seq_once")]

    def __str__(self) -> str:
        return f"run {self.run_id} #{self.seq} {self.type}"
