"""`{{ run.status|run_status }}`, `{{ run.stop_reason|stop_reason }}`: a run's status and
stop reason as people read them (sentence case, from the models' choices), the same on
the session page, its sidebar, the index and their live updates."""

from __future__ import annotations

from django import template

from chat.models import status_label, stop_reason_label

register = template.Library()


@register.filter
def run_status(value: str | None) -> str:
    return status_label(value or "")


@register.filter
def stop_reason(value: str | None) -> str:
    return stop_reason_label(value or "")
