"""Chat in the operator panel: each mode's run budget, changed by Owners and audited
(`RunBudget` is an audited model, whichever path changes it); sessions, runs, tool
executions and stream events read-only for every tier, since they are history."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import URLPattern, path, reverse

from chat.models import ChatSession, Run, RunBudget, RunRating, StreamEvent, ToolExecution
from controlplane.admin import AuditHistoryMixin, ReadOnlyAdmin
from controlplane.admin_site import CONTROL, OBSERVABILITY
from routing.models import Mode


@admin.register(RunBudget)
class RunBudgetAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    list_display = [
        "mode",
        "max_steps",
        "max_wall_clock_seconds",
        "max_cost",
        "max_retries_per_fingerprint",
    ]

    def get_urls(self) -> list[URLPattern]:
        by_mode = path(
            "mode/<str:mode>/",
            self.admin_site.admin_view(self.mode_view),
            name="chat_runbudget_mode",
        )
        return [by_mode, *super().get_urls()]

    def mode_view(self, request: HttpRequest, mode: str) -> HttpResponseRedirect:
        """A mode's own budget: its change page, or the add page for that mode when it
        has none yet (links from a run name the mode, not the row)."""
        if mode not in Mode.values:
            raise Http404(f"No mode {mode!r}.")
        budget = RunBudget.objects.filter(mode=mode).only("pk").first()
        if budget is not None:
            return HttpResponseRedirect(reverse("admin:chat_runbudget_change", args=[budget.pk]))
        add = reverse("admin:chat_runbudget_add")
        return HttpResponseRedirect(f"{add}?{urlencode({'mode': mode})}")


@admin.register(ChatSession)
class ChatSessionAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = ["__str__", "user", "mode", "run_count", "created_at", "updated_at"]
    list_filter = ["mode"]
    search_fields = ["title", "user__username"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChatSession]:
        return super().get_queryset(request).annotate(run_count=Count("runs"))

    @admin.display(description="Runs", ordering="run_count")
    def run_count(self, obj: Any) -> int:
        return int(obj.run_count)


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "__str__",
        "session",
        "mode",
        "status",
        "stop_reason",
        "started_by",
        "steps",
        "cost",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "stop_reason", "mode"]
    search_fields = ["status_detail", "last_error", "started_by__username"]
    list_select_related = ["session", "started_by"]
    date_hierarchy = "created_at"


@admin.register(ToolExecution)
class ToolExecutionAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = ["started_at", "run", "step", "tool", "outcome", "duration_ms", "fingerprint"]
    list_filter = ["outcome", "tool"]
    search_fields = ["tool", "error", "fingerprint"]
    list_select_related = ["run"]
    date_hierarchy = "started_at"


@admin.register(StreamEvent)
class StreamEventAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = ["at", "run", "seq", "type"]
    list_filter = ["type"]
    list_select_related = ["run"]
    date_hierarchy = "at"
    show_full_result_count = False  # a busy run writes thousands; counting them all is slow


@admin.register(RunRating)
class RunRatingAdmin(ReadOnlyAdmin):
    """People's verdicts on run replies (given and changed on the chat page, where the
    audit records each change): history, read-only here."""

    admin_section = OBSERVABILITY
    list_display = ["run", "verdict", "rated_by", "answered_by", "created_at", "updated_at"]
    list_filter = ["verdict"]
    search_fields = ["rated_by__username"]
    list_select_related = ["run", "rated_by"]
    date_hierarchy = "updated_at"
