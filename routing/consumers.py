"""The Routing page's websocket: its spend and usage figures (`routing/partials/
usage.html`) re-rendered as calls are recorded, and sent as one out-of-band swap.

A recorded call announces `home.spend` on Home's group (coalesced to one a second
per process, `routing.call_records`); this page follows the same event. The page's
range rides in the socket's URL, so a connection renders what its page shows. The
figures cost a few aggregate queries, so a connection renders at most once every
`RoutingPace.interval` seconds however many calls there are, and once a minute
besides: the 7 and 30 day ranges read a daily rollup that moves without an event,
and the hourly buckets move on with the clock.
"""

from __future__ import annotations

from typing import Any

from django.http import QueryDict
from django.template.loader import render_to_string

from controlplane.consumers import PacedRenderConsumer, RenderPace
from controlplane.live import HOME_GROUP
from routing.usage_report import pick_range
from routing.views import usage_context

SPEND_EVENT = "home.spend"
USAGE = "usage"


class RoutingPace(RenderPace):
    interval = 2.0


class RoutingConsumer(PacedRenderConsumer):
    pace_class = RoutingPace
    catch_up_seconds = 60.0

    def page_groups(self) -> list[str]:
        query = QueryDict(self.scope.get("query_string", b"").decode())
        self.time_range, _ = pick_range(query.get("range"))
        return [HOME_GROUP]

    def touched(self, event_type: str) -> set[str]:
        """Of Home's group's events (runs, tasks, audit...) only spend concerns this
        page."""
        return {USAGE} if event_type == SPEND_EVENT else set()

    def catch_up(self) -> set[str]:
        return {USAGE}

    def render(self, changed: set[Any]) -> list[str]:
        context = {**usage_context(self.time_range), "oob": True}
        return [render_to_string("routing/partials/usage.html", context)]
