"""The Health page's websocket: rows re-rendered with the page's own fragments and
sent as out-of-band swaps, never JSON.

The page passes its query string (window, service, level, status), so a connection
renders only rows its page shows, counted over its window. A row the page has is
replaced; a new fingerprint goes on top of its service's table, or brings its
service's section. Ingest publishes `health.fingerprints` with the ids it touched;
a burst is coalesced (at most one render every `RENDER_INTERVAL` seconds per
connection, covering every id that arrived meanwhile).

The channel layer is a delivery hint (it drops messages when full, and a process
without a shared layer never hears of another's ingest), so every `CATCH_UP_SECONDS`
a connection also looks for fingerprints stored or seen since it last looked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Max, Q
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone

from controlplane.consumers import PacedRenderConsumer
from healthmon.ingest import HEALTH_GROUP
from healthmon.models import Fingerprint
from healthmon.overview import (
    WINDOWS,
    HealthFilters,
    ServiceSection,
    demo_services,
    fingerprint_rows,
    service_sections,
)

CATCH_UP_SECONDS = 5.0


@dataclass
class PageState:
    """What the connection's page shows, so an update knows replace from insert."""

    filters: HealthFilters
    ids: set[int] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    max_id: int = 0
    seen_since: datetime = field(default_factory=timezone.now)

    def load(self) -> None:
        sections = service_sections(self.filters)
        self.services = {section.service for section in sections}
        self.ids = {row.fingerprint.pk for section in sections for row in section.rows}
        self.max_id = Fingerprint.objects.aggregate(top=Max("pk"))["top"] or 0

    def changed_since(self) -> set[int]:
        """Fingerprints stored or seen since the last look (the catch-up)."""
        found = Fingerprint.objects.filter(
            Q(pk__gt=self.max_id) | Q(last_seen__gt=self.seen_since)
        ).values_list("pk", "last_seen")
        ids = set()
        for pk, last_seen in found:
            ids.add(pk)
            self.max_id = max(self.max_id, pk)
            self.seen_since = max(self.seen_since, last_seen)
        return ids

    def render_update(self, ids: set[int]) -> list[str]:
        """The oob swaps that bring the page up to date with these fingerprints, one
        message each: the browser parses a message as one fragment, where a row
        (`<tr>`) next to a `<tbody>` would drop the `<tbody>` and its swap."""
        now = timezone.now()
        context = {"window": WINDOWS[self.filters.window], "now": now}
        parts: list[str] = []
        new_by_service: dict[str, ServiceSection] = {}
        demo = demo_services()
        rows = fingerprint_rows(ids, self.filters, now)
        # Shown rows that no longer match (resolved under ?status=unresolved, or out of
        # the window) leave the page, as a reload would not show them.
        gone = (ids & self.ids) - {row.fingerprint.pk for row in rows}
        for pk in sorted(gone):
            parts.append(render_to_string("healthmon/partials/row_gone.html", {"pk": pk}))
            self.ids.discard(pk)
        for row in rows:
            fingerprint = row.fingerprint
            self.max_id = max(self.max_id, fingerprint.pk)
            if fingerprint.pk in self.ids:
                parts.append(
                    render_to_string(
                        "healthmon/partials/fingerprint_row.html",
                        {**context, "row": row, "oob": True},
                    )
                )
                continue
            section = new_by_service.setdefault(
                fingerprint.service,
                ServiceSection(fingerprint.service, is_demo=fingerprint.service in demo),
            )
            section.rows.append(row)
            self.ids.add(fingerprint.pk)
        for service, section in new_by_service.items():
            template = "new_rows" if service in self.services else "new_section"
            parts.append(
                render_to_string(
                    f"healthmon/partials/{template}.html", {**context, "section": section}
                )
            )
            self.services.add(service)
        return parts


class HealthConsumer(PacedRenderConsumer):
    catch_up_seconds = CATCH_UP_SECONDS

    def page_groups(self) -> list[str]:
        query = QueryDict(self.scope.get("query_string", b"").decode("latin1"))
        filters, _errors = HealthFilters.from_query(query)  # the page named the errors
        self.state = PageState(filters)
        return [HEALTH_GROUP]

    async def accepted(self) -> None:
        await database_sync_to_async(self.state.load)()

    async def health_fingerprints(self, event: dict[str, Any]) -> None:
        self.mark({int(pk) for pk in event.get("ids", [])})

    def catch_up(self) -> set[int]:
        return self.state.changed_since()

    def render(self, changed: set[Any]) -> list[str]:
        return self.state.render_update(changed)
