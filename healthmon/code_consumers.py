"""The Code health page's websocket: a repository's row re-rendered while its scan
runs (files scanned of the total, each check's progress), the findings and what is
new this week once a scan ends, the open pull requests when one changes. Fragments
are the page's own templates, sent as out-of-band swaps, never JSON.

A scan announces each move and progress write with `scan_changed`, and a pull request
saved announces itself; `connect_announcements` turns both into a channel-layer event
published on commit. The event is only a hint to look: a connection compares what its
page shows with the database and renders what differs, at most once every
`RENDER_INTERVAL` seconds. Since the layer drops messages and a scan in another
process may publish where this one cannot hear, a connection also looks every
`CATCH_UP_SECONDS` by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.context_processors import PermWrapper
from django.db.models.signals import post_save
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone

from controlplane import live
from controlplane.consumers import PacedRenderConsumer
from controlplane.tiers import StaffUser
from healthmon import code_health
from healthmon.code_health import CodeFilters
from healthmon.models import CodeReport, PullRequest, Repository, Scan

CODE_HEALTH_GROUP = "health.code"
CATCH_UP_SECONDS = 2.0
# What an event marks: the page looks at its state again for what changed.
LOOK = "look"
FINISHED = (Scan.Status.SUCCEEDED, Scan.Status.FAILED)


def announce_scan(sender: Any, scan: Scan, **kwargs: Any) -> None:
    live.publish(CODE_HEALTH_GROUP, "code.changed", repository=scan.repository_id)


def announce_pull_request(sender: Any, instance: PullRequest, **kwargs: Any) -> None:
    live.publish(CODE_HEALTH_GROUP, "code.changed", repository=instance.repository_id)


def announce_report(sender: Any, instance: CodeReport, **kwargs: Any) -> None:
    live.publish(CODE_HEALTH_GROUP, "code.changed", repository=instance.repository_id)


def connect_announcements() -> None:
    """Called once from the app's ready()."""
    from healthmon.code_scans import scan_changed

    scan_changed.connect(announce_scan, dispatch_uid="code_health_scan_changed")
    post_save.connect(
        announce_pull_request, sender=PullRequest, dispatch_uid="code_health_pull_request"
    )
    post_save.connect(announce_report, sender=CodeReport, dispatch_uid="code_health_report")


@dataclass
class PageState:
    """What the connection's page shows, so a look renders only what changed."""

    filters: CodeFilters
    user: StaffUser
    scans: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    pull_requests: list[tuple[Any, ...]] = field(default_factory=list)

    shown: set[int] = field(default_factory=set)  # the repositories with a row

    def load(self) -> None:
        self.shown = set(Repository.objects.values_list("pk", flat=True))
        self.scans = code_health.latest_scan_marks()
        self.pull_requests = code_health.pull_request_marks()

    def render_update(self) -> list[str]:
        """The oob swaps that bring the page up to date, one message each."""
        scans = code_health.latest_scan_marks()
        changed = sorted(pk for pk, mark in scans.items() if self.scans.get(pk) != mark)
        ended = any(
            mark[1] in FINISHED and (self.scans.get(pk) or (None, None))[:2] != mark[:2]
            for pk, mark in scans.items()
        )
        self.scans = scans
        context = {
            "perms": PermWrapper(self.user),
            "filters": self.filters,
            "now": timezone.now(),
            "oob": True,
        }
        parts: list[str] = []
        if changed:
            for row in code_health.repository_rows(changed):
                # A repository added since the page loaded gets its row at the end.
                template = (
                    "code_repository_row" if row.repository.pk in self.shown else "code_new_row"
                )
                self.shown.add(row.repository.pk)
                parts.append(
                    render_to_string(f"healthmon/partials/{template}.html", {**context, "row": row})
                )
        if ended:
            parts.append(
                render_to_string(
                    "healthmon/partials/code_findings.html",
                    {**context, **code_health.findings_context(self.filters)},
                )
            )
            parts.append(
                render_to_string(
                    "healthmon/partials/code_new_this_week.html",
                    {**context, **code_health.new_this_week_context()},
                )
            )
        pull_requests = code_health.pull_request_marks()
        if pull_requests != self.pull_requests:
            self.pull_requests = pull_requests
            parts.append(
                render_to_string(
                    "healthmon/partials/code_pull_requests.html",
                    {**context, "pull_requests": code_health.open_pull_requests()},
                )
            )
        return parts


class CodeHealthConsumer(PacedRenderConsumer):
    catch_up_seconds = CATCH_UP_SECONDS

    def page_groups(self) -> list[str]:
        query = QueryDict(self.scope.get("query_string", b"").decode("latin1"))
        filters, _errors = CodeFilters.from_query(query)  # the page named the errors
        self.state = PageState(filters, self.scope["user"])
        return [CODE_HEALTH_GROUP]

    async def accepted(self) -> None:
        await database_sync_to_async(self.state.load)()

    async def code_changed(self, event: dict[str, Any]) -> None:
        self.mark({LOOK})

    def catch_up(self) -> set[str]:
        # The page's state tells what changed since it was last rendered.
        return {LOOK}

    def render(self, changed: set[Any]) -> list[str]:
        return self.state.render_update()
