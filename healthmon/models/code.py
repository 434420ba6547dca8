"""Code health: repositories the product scans, their scans, and the findings the
checks report, each with an identity that survives lines moving."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from controlplane.audit import AuditedModel


class Repository(AuditedModel):
    class Kind(models.TextChoices):
        LOCAL = "local", "Local git path"
        GITHUB = "github", "GitHub (through an integration)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LOCAL)
    path = models.CharField(
        max_length=500, blank=True, help_text="The git repository on this machine (local kind)."
    )
    integration = models.ForeignKey(
        "controlplane.Integration",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="repositories",
        help_text="The GitHub account it is read with (GitHub kind).",
    )
    full_name = models.CharField(
        max_length=200, blank=True, help_text="owner/name on GitHub (GitHub kind)."
    )
    default_branch = models.CharField(
        max_length=200, blank=True, help_text="Blank: the branch the repository's HEAD names."
    )
    enabled = models.BooleanField(default=True)
    # Per-repository options of the checks (none are read yet beyond the defaults).
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name


class Scan(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="scans")
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    branch = models.CharField(max_length=200, blank=True)
    files_scanned = models.PositiveIntegerField(default=0)
    files_total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Per check: {"ruff": {"new": 1, "open": 3, "fixed": 0, "reported": 4}}, or
    # {"ruff": {"error": "why it failed"}} for a check that failed.
    summary = models.JSONField(default=dict, blank=True)
    # While running, per check: {"ruff": [done, total]}; files_scanned follows it.
    progress = models.JSONField(default=dict, blank=True)
    # What each check that succeeded keeps for the next scan: {"checks": {name: {...}}}.
    state = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # Two scans of one repository at once would reconcile against each other.
            models.UniqueConstraint(
                fields=["repository"],
                condition=Q(status="running"),
                name="one_running_scan_per_repository",
            )
        ]

    def __str__(self) -> str:
        return f"{self.repository} scan #{self.pk} ({self.status})"


class Finding(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        FIXED = "fixed"
        INTENDED = "intended", "Intended (not reported again)"
        IGNORED = "ignored", "Ignored (not reported again)"

    class Severity(models.IntegerChoices):
        INFO = 10, "info"
        LOW = 20, "low"
        MEDIUM = 30, "medium"
        HIGH = 40, "high"
        CRITICAL = 50, "critical"

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="findings")
    check_name = models.CharField("check", max_length=40, db_index=True)
    rule = models.CharField(max_length=100)
    identity = models.CharField(max_length=64)
    severity = models.PositiveSmallIntegerField(choices=Severity.choices, db_index=True)
    message = models.TextField()
    file = models.CharField(max_length=500)
    line = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True
    )
    first_seen_scan = models.ForeignKey(
        Scan, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_seen_scan = models.ForeignKey(
        Scan, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    fixed_at = models.DateTimeField(null=True, blank=True)
    task = models.ForeignKey(
        "selfheal.Task", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-severity", "file", "line"]
        permissions = [
            ("triage_finding", "Can mark code findings intended or ignored and reopen them")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "identity"], name="one_finding_per_identity"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule} {self.file}:{self.line}"


class PullRequest(models.Model):
    """A pull request the product proposes for mechanical fixes: prepared on a branch
    of a checkout, pushed and opened on GitHub only after an Operator approves it."""

    class Status(models.TextChoices):
        PROPOSED = "proposed", "Waiting for approval"
        OPEN = "open"
        MERGED = "merged"
        CLOSED = "closed"
        REJECTED = "rejected"
        FAILED = "failed"

    repository = models.ForeignKey(
        Repository, on_delete=models.CASCADE, related_name="pull_requests"
    )
    scan = models.ForeignKey(
        Scan, on_delete=models.SET_NULL, null=True, blank=True, related_name="pull_requests"
    )
    approval = models.ForeignKey(
        "controlplane.Approval", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PROPOSED, db_index=True
    )
    base = models.CharField(max_length=200)
    branch = models.CharField(max_length=200)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    # Each change and the finding it fixes: [{"finding": id, "rule", "file", "line", "message"}].
    changes = models.JSONField(default=list, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    number = models.PositiveIntegerField(null=True, blank=True)
    url = models.URLField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    merged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "pull request"

    def __str__(self) -> str:
        number = f"#{self.number}" if self.number else f"(proposal {self.pk})"
        return f"{self.repository} PR {number}: {self.title}"
