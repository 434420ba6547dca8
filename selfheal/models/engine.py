from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from django.db import connection, models
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from controlplane import api_tokens
from controlplane.audit import AuditedModel
from selfheal import task_kinds


class TaskStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    BLOCKED = "blocked"
    WAITING_APPROVAL = "waiting_approval", "Waiting for approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


OPEN_STATUSES = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.BLOCKED,
    TaskStatus.WAITING_APPROVAL,
)

# The only moves a task can make. Anything else is refused (and nothing is written).
TRANSITIONS: dict[str, set[str]] = {
    TaskStatus.PENDING: {
        TaskStatus.RUNNING,
        TaskStatus.BLOCKED,
        TaskStatus.WAITING_APPROVAL,
        TaskStatus.CANCELLED,
        TaskStatus.COMPLETED,  # a person's to-do, marked done (the engine refuses it otherwise)
    },
    TaskStatus.RUNNING: {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.PENDING,  # lease lost or a retryable failure
        TaskStatus.BLOCKED,
        TaskStatus.CANCELLED,
    },
    TaskStatus.BLOCKED: {TaskStatus.PENDING, TaskStatus.CANCELLED, TaskStatus.FAILED},
    TaskStatus.WAITING_APPROVAL: {TaskStatus.PENDING, TaskStatus.CANCELLED},
    TaskStatus.COMPLETED: set(),
    TaskStatus.FAILED: {TaskStatus.PENDING},  # a person retries it
    TaskStatus.CANCELLED: set(),
}


class TaskQuerySet(models.QuerySet["Task"]):
    def doable_with(
        self, capabilities: Iterable[str], kinds: Collection[str] | None = None
    ) -> TaskQuerySet:
        """The tasks that need no capability outside `capabilities` (of `kinds`, if
        given): what a worker with them may claim."""
        tasks = self.filter(kind__in=list(kinds)) if kinds is not None else self
        capabilities = list(capabilities)
        if connection.vendor == "postgresql":
            return tasks.filter(required_capabilities__contained_by=capabilities)
        # SQLite: no required capability outside the worker's (json_each lists them).
        column = f'"{Task._meta.db_table}"."required_capabilities"'
        placeholders = ", ".join(["%s"] * len(capabilities))
        missing = RawSQL(  # noqa: S611 (the capabilities are bound parameters)
            f"SELECT count(*) FROM json_each({column}) WHERE value NOT IN ({placeholders})",  # noqa: S608
            capabilities,
        )
        return tasks.alias(missing=missing).filter(missing=0)


class Task(models.Model):
    """A unit of governance work, done by a worker that claims it under a lease."""

    class Source(models.TextChoices):
        CHAT = "chat"
        HEALTHMON = "healthmon", "Health monitor"
        SELFHEAL = "selfheal", "Self-heal"
        MANUAL = "manual"

    Status = TaskStatus

    title = models.CharField(max_length=200)
    kind = models.CharField(max_length=100, db_index=True)
    payload = models.JSONField(default=dict, blank=True)
    priority = models.IntegerField(default=0, help_text="Higher runs first.")
    status = models.CharField(
        max_length=20, choices=TaskStatus.choices, default=TaskStatus.PENDING, db_index=True
    )
    required_capabilities = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.MANUAL)
    dedupe_key = models.CharField(max_length=200, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    lease_worker = models.ForeignKey(
        "Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="leased_tasks"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    fencing_token = models.PositiveBigIntegerField(
        default=0, help_text="Grows with every claim; a completion must carry the current one."
    )
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    blocked_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-priority", "created_at", "id"]
        permissions = [("operate_task", "Can create, retry and cancel tasks")]
        indexes = [
            models.Index(fields=["status", "-priority", "created_at"], name="task_claim_order"),
        ]
        constraints = [
            # One open task per de-duplication key: creating another returns the open one.
            models.UniqueConstraint(
                fields=["dedupe_key"],
                condition=~Q(dedupe_key="")
                & Q(status__in=["pending", "running", "blocked", "waiting_approval"]),
                name="task_one_open_per_dedupe_key",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def can_retry(self) -> bool:
        """A person may put it back in the queue: it is stuck, blocked, waiting or failed
        (a healthy running task is its worker's)."""
        if self.status == TaskStatus.RUNNING:
            return self.lease_expires_at is not None and self.lease_expires_at < timezone.now()
        return self.status in (TaskStatus.BLOCKED, TaskStatus.WAITING_APPROVAL, TaskStatus.FAILED)

    @property
    def for_a_person(self) -> bool:
        return task_kinds.is_person_kind(self.kind)

    @property
    def waiting_for(self) -> str:
        """What the task waits for now, in words ("" once it is final). A running
        task's words name its worker: read it with `select_related("lease_worker")`."""
        if self.status == TaskStatus.PENDING:
            return task_kinds.waiting_for(self.kind, self.required_capabilities)
        if self.status == TaskStatus.RUNNING:
            holder = self.lease_worker.name if self.lease_worker else "its worker"
            return f"{holder} to finish it"
        if self.status == TaskStatus.WAITING_APPROVAL:
            return "an approval decision"
        if self.status == TaskStatus.BLOCKED:
            return self.blocked_reason or "a retry (it is blocked)"
        return ""


hash_token = api_tokens.digest


WORKER_TOKEN_PREFIX = "cpw_"  # noqa: S105 (a prefix, not a secret)


class Worker(AuditedModel):
    class Status(models.TextChoices):
        ONLINE = "online"
        OFFLINE = "offline"
        DRAINING = "draining"

    name = models.SlugField(max_length=100, unique=True)
    capabilities = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OFFLINE)
    last_heartbeat = models.DateTimeField(null=True, blank=True, db_index=True)
    version = models.CharField(max_length=50, blank=True)
    token_lookup = models.CharField(max_length=16, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    # Not a secret to protect (the token has 256 bits), but redacted in the audit trail
    # all the same, as a service key's hash is.
    token_hash.audit_redacted = True  # type: ignore[attr-defined]
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def assign_token(self) -> str:
        """A new API token; only its hash is kept. Shown once."""
        self.token_lookup, raw, self.token_hash = api_tokens.new_token(WORKER_TOKEN_PREFIX)
        return raw

    @classmethod
    def register(cls, name: str, capabilities: list[str], **extra: Any) -> tuple[Worker, str]:
        worker = cls(name=name, capabilities=sorted(set(capabilities)), **extra)
        raw = worker.assign_token()
        worker.save()
        return worker, raw

    @classmethod
    def authenticate(cls, raw: str) -> Worker | None:
        lookup = api_tokens.lookup_of(raw, WORKER_TOKEN_PREFIX)
        if lookup is None:
            return None
        worker = cls.objects.filter(token_lookup=lookup, revoked_at__isnull=True).first()
        if worker is None or not api_tokens.matches(worker.token_hash, raw):
            return None
        return worker
