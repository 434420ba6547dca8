"""Self-heal in the operator panel.

Control: tasks (moved only through the engine: retry and cancel actions), workers
(registered with a token shown once, revoked, never deleted) and auto-heal rules
(Owners edit them, every change audited). Observability: playbook executions and
auto-heal runs, history that nobody rewrites.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import Count, Max, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from controlplane.admin import AuditHistoryMixin, ReadOnlyAdmin, SecretShownOnceAdmin
from controlplane.admin_site import CONTROL, OBSERVABILITY
from selfheal import engine
from selfheal.engine_errors import TransitionRefused
from selfheal.models import AutoHealRule, AutoHealRun, PlaybookExecution, Task, TaskStatus, Worker
from selfheal.playbooks import get_playbook, playbooks
from selfheal.playbooks.checks import CHECKS


def pretty_json(value: Any) -> str:
    return format_html(
        '<pre class="json">{}</pre>', json.dumps(value, indent=2, sort_keys=True, default=str)
    )


@admin.register(Task)
class TaskAdmin(AuditHistoryMixin, ReadOnlyAdmin):
    """Tasks change status only through the engine, so every move is valid and audited."""

    admin_section = CONTROL
    # Priority and source are filters and on each task's page: the list fits 1,440 px.
    list_display = [
        "id",
        "title",
        "kind",
        "status",
        "attempts_label",
        "lease_worker",
        "lease_expires_at",
        "created_at",
    ]
    list_filter = ["status", "kind", "source"]
    search_fields = ["title", "kind", "dedupe_key"]
    list_select_related = ["lease_worker"]
    date_hierarchy = "created_at"
    actions = ["retry", "cancel"]
    fields = [
        "title",
        "kind",
        "status",
        "waiting_for",
        "priority",
        "source",
        "dedupe_key",
        "required_capabilities",
        "attempts_label",
        "lease_worker",
        "lease_expires_at",
        "fencing_token",
        "blocked_reason",
        "error",
        "payload_pretty",
        "result_pretty",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = ["attempts_label", "waiting_for", "payload_pretty", "result_pretty"]

    @admin.display(description="Attempts")
    def attempts_label(self, task: Task) -> str:
        return f"{task.attempts}/{task.max_attempts}"

    @admin.display(description="Payload")
    def payload_pretty(self, task: Task) -> str:
        return pretty_json(task.payload)

    @admin.display(description="Result")
    def result_pretty(self, task: Task) -> str:
        return pretty_json(task.result)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("selfheal.operate_task")

    def _move(self, request: HttpRequest, queryset: QuerySet[Task], to: str, verb: str) -> None:
        # The admin serves signed-in staff only: its user is never anonymous.
        actor = request.user if isinstance(request.user, User) else None
        moved = 0
        for task in queryset:
            try:
                engine.transition(task, to, actor=actor, reason=f"{verb} from the admin.")
                moved += 1
            except TransitionRefused as exc:
                self.message_user(request, str(exc), messages.ERROR)
        if moved:
            self.message_user(request, f"{moved} task(s) {verb.lower()}.")

    @admin.action(description="Retry: put back in the queue", permissions=["operate"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._move(request, queryset, TaskStatus.PENDING, "Retried")

    @admin.action(description="Cancel selected tasks", permissions=["operate"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._move(request, queryset, TaskStatus.CANCELLED, "Cancelled")


class WorkerForm(forms.ModelForm):
    capabilities = forms.CharField(
        required=False,
        help_text="Comma-separated, e.g. playbook.run,deploy. The worker reports its own "
        "on every heartbeat.",
    )

    class Meta:
        model = Worker
        fields = ["name", "capabilities"]

    def clean_capabilities(self) -> list[str]:
        return engine.normalized_capabilities(self.cleaned_data["capabilities"].split(","))


@admin.register(Worker)
class WorkerAdmin(AuditHistoryMixin, SecretShownOnceAdmin):
    admin_section = CONTROL
    shown_once_label = "Token"
    shown_once_usage = (
        "Start the worker with CONTROLPLANE_WORKER_TOKEN set to it, e.g. "
        "bin/manage run_worker --api <this site's URL> --capabilities <its capabilities>."
    )
    form = WorkerForm
    list_display = [
        "name",
        "status",
        "last_heartbeat",
        "heartbeat_age",
        "running_tasks",
        "capabilities",
        "version",
        "token_lookup",
        "revoked_at",
    ]
    list_filter = ["status", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "token_lookup"]
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Worker]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                running=Count("leased_tasks", filter=Q(leased_tasks__status=TaskStatus.RUNNING))
            )
        )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["name", "capabilities"]
        return [
            "name",
            "status",
            "capabilities",
            "version",
            "last_heartbeat",
            "token_lookup",
            "created_at",
            "revoked_at",
        ]

    @admin.display(description="Heartbeat age")
    def heartbeat_age(self, worker: Worker) -> str:
        if worker.last_heartbeat is None:
            return "never"
        return f"{int((timezone.now() - worker.last_heartbeat).total_seconds())} s"

    @admin.display(description="Running", ordering="running")
    def running_tasks(self, worker: Worker) -> int:
        return int(getattr(worker, "running", 0))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A worker is registered or revoked; its identity and token never change here.
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked workers stay, so the audit trail and tasks can name them

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("selfheal.change_worker")

    def save_model(self, request: HttpRequest, obj: Worker, form: Any, change: bool) -> None:
        raw = obj.assign_token()
        super().save_model(request, obj, form, change)
        self.show_secret_once(request, raw)

    @admin.action(description="Revoke the tokens of selected workers", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        count = 0
        for worker in queryset.filter(revoked_at__isnull=True):
            worker.revoked_at = timezone.now()
            worker.save()
            engine.go_offline(worker, "its token was revoked")
            count += 1
        self.message_user(
            request, f"{count} worker(s) revoked; their tasks went back to the queue."
        )


class AutoHealRuleForm(forms.ModelForm):
    class Meta:
        model = AutoHealRule
        fields = [
            "name",
            "finding",
            "severity",
            "playbook",
            "cooldown_minutes",
            "target_cooldown_minutes",
            "max_runs_per_hour",
            "enabled",
        ]
        widgets = {
            "finding": forms.Select(choices=[(name, title) for name, (title, _) in CHECKS.items()]),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A read-only change page (Observers, Operators) builds the form without the
        # fields it shows as read-only text: there is no playbook field to dress.
        if "playbook" in self.fields:
            self.fields["playbook"].widget = forms.Select(
                choices=[(p.name, p.title or p.name) for p in playbooks()]
            )

    def clean_finding(self) -> str:
        finding = self.cleaned_data["finding"]
        if finding not in CHECKS:
            raise forms.ValidationError(f"Unknown check; one of {', '.join(CHECKS)}.")
        return finding

    def clean_playbook(self) -> str:
        name = self.cleaned_data["playbook"]
        try:
            get_playbook(name)
        except LookupError as exc:
            raise forms.ValidationError(str(exc)) from None
        return name


@admin.register(AutoHealRule)
class AutoHealRuleAdmin(AuditHistoryMixin, admin.ModelAdmin):
    """Owners change rules (they hold every self-heal permission); the others see them."""

    admin_section = CONTROL
    form = AutoHealRuleForm
    list_display = [
        "name",
        "finding",
        "severity",
        "playbook",
        "cooldown_minutes",
        "target_cooldown_minutes",
        "max_runs_per_hour",
        "enabled",
        "last_run",
    ]
    list_filter = ["enabled", "severity", "playbook"]
    search_fields = ["name", "finding"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AutoHealRule]:
        return super().get_queryset(request).annotate(last_run_at=Max("runs__at"))

    @admin.display(description="Last run", ordering="last_run_at")
    def last_run(self, rule: AutoHealRule) -> Any:
        return getattr(rule, "last_run_at", None) or "never"


@admin.register(PlaybookExecution)
class PlaybookExecutionAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "id",
        "playbook",
        "dry_run",
        "status",
        "worst",
        "trigger",
        "started_by",
        "started_at",
        "duration_ms",
        "rolled_back_by",
    ]
    list_filter = ["playbook", "status", "trigger", "dry_run"]
    search_fields = ["summary", "error"]
    list_select_related = ["started_by", "rolled_back_by"]
    date_hierarchy = "started_at"
    fields = [
        "playbook",
        "dry_run",
        "status",
        "trigger",
        "started_by",
        "started_at",
        "finished_at",
        "duration_ms",
        "summary",
        "error",
        "findings_pretty",
        "actions_pretty",
        "snapshots_pretty",
        "verification_pretty",
        "rolled_back_at",
        "rolled_back_by",
    ]
    readonly_fields = [
        "findings_pretty",
        "actions_pretty",
        "snapshots_pretty",
        "verification_pretty",
    ]

    @admin.display(description="Worst finding")
    def worst(self, execution: PlaybookExecution) -> str:
        return execution.worst_severity if execution.findings else "—"

    @admin.display(description="Findings")
    def findings_pretty(self, execution: PlaybookExecution) -> str:
        return pretty_json(execution.findings)

    @admin.display(description="Actions")
    def actions_pretty(self, execution: PlaybookExecution) -> str:
        return pretty_json(execution.actions)

    @admin.display(description="Snapshots (before each change)")
    def snapshots_pretty(self, execution: PlaybookExecution) -> str:
        return pretty_json(execution.snapshots)

    @admin.display(description="Verification")
    def verification_pretty(self, execution: PlaybookExecution) -> str:
        return pretty_json(execution.verification)


@admin.register(AutoHealRun)
class AutoHealRunAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = ["at", "rule", "target", "execution", "execution_status"]
    list_filter = ["rule"]
    search_fields = ["target", "rule__name"]
    list_select_related = ["rule", "execution"]
    date_hierarchy = "at"

    @admin.display(description="Execution status")
    def execution_status(self, run: AutoHealRun) -> str:
        return run.execution.get_status_display() if run.execution else "—"
