"""Code health in the operator panel.

Control: repositories (Owners add and change them, every change audited).
Observability: scans (history, read-only) and findings (written by scans; Operators
mark one intended, so scans stop reporting it as open, or reopen it), and the pull
requests code health proposed (read-only: they move through their approval).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from controlplane.admin import AuditHistoryMixin, ReadOnlyAdmin
from controlplane.admin_keys import KeyedFieldsMixin
from controlplane.admin_site import CONTROL, OBSERVABILITY
from controlplane.github import REPOSITORY_PATTERN
from controlplane.models import Integration
from healthmon import code_findings
from healthmon.models import CodeReport, Finding, PullRequest, Repository, Scan

TRIAGE_PERMISSION = "healthmon.triage_finding"


class RepositoryForm(forms.ModelForm):
    class Meta:
        model = Repository
        fields = [
            "name",
            "kind",
            "path",
            "integration",
            "full_name",
            "default_branch",
            "enabled",
            "settings",
        ]

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind")
        if kind == Repository.Kind.LOCAL and not cleaned.get("path"):
            self.add_error("path", "A local repository needs the path of its git repository.")
        if kind == Repository.Kind.GITHUB:
            self._clean_github(cleaned)
        if not isinstance(cleaned.get("settings", {}), dict):
            self.add_error("settings", "Settings are a JSON object, e.g. {}.")
        return cleaned

    def _clean_github(self, cleaned: dict[str, object]) -> None:
        integration = cleaned.get("integration")
        if not isinstance(integration, Integration):
            self.add_error(
                "integration", "A GitHub repository is read through a GitHub integration."
            )
        elif integration.kind != Integration.Kind.GITHUB:
            self.add_error(
                "integration",
                f"{integration.name} is a {integration.get_kind_display()} integration: "
                "choose a GitHub one.",
            )
        full_name = str(cleaned.get("full_name") or "")
        if not full_name:
            self.add_error("full_name", "A GitHub repository needs its owner/name.")
        elif not REPOSITORY_PATTERN.match(full_name):
            self.add_error("full_name", "Give the repository as owner/name, e.g. octo-org/backend.")


@admin.register(Repository)
class RepositoryAdmin(KeyedFieldsMixin, AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    form = RepositoryForm
    list_display = ["name", "kind", "path", "full_name", "default_branch", "enabled"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "path", "full_name"]
    list_select_related = ["integration"]
    readonly_fields = ["created_at"]


@admin.register(Scan)
class ScanAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "created_at",
        "repository",
        "status",
        "short_commit",
        "files_total",
        "finished_at",
        "error",
    ]
    list_filter = ["status", "repository"]
    search_fields = ["repository__name", "commit", "error"]
    list_select_related = ["repository"]
    date_hierarchy = "created_at"
    fields = [
        "repository",
        "status",
        "branch",
        "commit",
        "created_at",
        "started_at",
        "finished_at",
        "files_scanned",
        "files_total",
        "summary",
        "error",
    ]

    @admin.display(description="Commit", ordering="commit")
    def short_commit(self, scan: Scan) -> str:
        return scan.commit[:12]


@admin.register(Finding)
class FindingAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "rule",
        "severity",
        "location",
        "message",
        "status",
        "repository",
        "check_name",
        "first_seen_at",
        "fixed_at",
        "task_link",
    ]
    list_filter = ["status", "severity", "check_name", "repository"]
    search_fields = ["rule", "file", "message"]
    list_select_related = ["repository", "task"]
    date_hierarchy = "first_seen_at"
    actions = ["mark_intended", "mark_ignored", "reopen"]
    fields = [
        "repository",
        "check_name",
        "rule",
        "severity",
        "message",
        "file",
        "line",
        "status",
        "identity",
        "first_seen_scan",
        "first_seen_at",
        "last_seen_scan",
        "last_seen_at",
        "fixed_at",
        "task_link",
    ]

    @admin.display(description="Location", ordering="file")
    def location(self, finding: Finding) -> str:
        return f"{finding.file}:{finding.line}" if finding.line else finding.file

    @admin.display(description="Task")
    def task_link(self, finding: Finding) -> str:
        if finding.task is None:
            return "—"
        url = reverse("admin:selfheal_task_change", args=[finding.task.pk])
        return format_html('<a href="{}">#{} {}</a>', url, finding.task.pk, finding.task.status)

    def has_triage_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(TRIAGE_PERMISSION)

    @admin.action(description="Mark selected findings intended", permissions=["triage"])
    def mark_intended(self, request: HttpRequest, queryset: QuerySet[Finding]) -> None:
        findings = list(queryset.select_related("task", "repository"))
        for finding in findings:
            code_findings.mark_intended(finding, actor=_actor(request))
        self.message_user(request, f"{len(findings)} finding(s) now intended.")

    @admin.action(description="Ignore selected findings", permissions=["triage"])
    def mark_ignored(self, request: HttpRequest, queryset: QuerySet[Finding]) -> None:
        findings = list(queryset.select_related("task", "repository"))
        for finding in findings:
            code_findings.mark_ignored(finding, actor=_actor(request))
        self.message_user(request, f"{len(findings)} finding(s) now ignored.")

    @admin.action(description="Reopen selected findings", permissions=["triage"])
    def reopen(self, request: HttpRequest, queryset: QuerySet[Finding]) -> None:
        findings = list(queryset.select_related("task", "repository"))
        for finding in findings:
            code_findings.reopen(finding, actor=_actor(request))
        self.message_user(request, f"{len(findings)} finding(s) open again.")


@admin.register(PullRequest)
class PullRequestAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "created_at",
        "repository",
        "title",
        "status",
        "branch",
        "base",
        "approval_link",
        "github_link",
    ]
    list_filter = ["status", "repository"]
    search_fields = ["repository__name", "title", "branch", "commit", "error"]
    list_select_related = ["repository", "approval"]
    date_hierarchy = "created_at"
    fields = [
        "repository",
        "status",
        "title",
        "base",
        "branch",
        "commit",
        "scan",
        "approval_link",
        "github_link",
        "error",
        "created_at",
        "opened_at",
        "merged_at",
        "closed_at",
        "body",
        "changes",
    ]

    @admin.display(description="Approval")
    def approval_link(self, pull_request: PullRequest) -> str:
        if pull_request.approval is None:
            return "—"
        approval = pull_request.approval
        url = reverse("admin:controlplane_approval_change", args=[approval.pk])
        return format_html('<a href="{}">#{} {}</a>', url, approval.pk, approval.status)

    @admin.display(description="On GitHub")
    def github_link(self, pull_request: PullRequest) -> str:
        if not pull_request.url:
            return "—"
        return format_html(
            '<a href="{}" rel="noopener noreferrer">#{}</a>', pull_request.url, pull_request.number
        )


def _actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


@admin.register(CodeReport)
class CodeReportAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = ["created_at", "subject", "trigger", "period_start", "period_end", "sent_at"]
    list_filter = ["trigger", "repository"]
    search_fields = ["subject", "text"]
    list_select_related = ["repository"]
    date_hierarchy = "created_at"
    fields = [
        "subject",
        "trigger",
        "repository",
        "period_start",
        "period_end",
        "created_at",
        "sent_at",
        "page_link",
        "text",
    ]

    @admin.display(description="Page")
    def page_link(self, report: CodeReport) -> str:
        url = reverse("healthmon:code_report", args=[report.pk])
        return format_html('<a href="{}">{}</a>', url, url)
