"""Home's recent changes, each linked to what it changed, and the toggles that are off.

An audit event names its object by content type and id. The link is the product's
own page of the object where its app registered one (`register_object_pages`, given
the ids of one model at once, so ten rows cost a query per model at most), else the
object's admin page, built from the content type and id alone."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.urls import NoReverseMatch, reverse

from controlplane.models import AuditEvent, FeatureToggle

RECENT_LIMIT = 10


@dataclass(frozen=True)
class Change:
    event: AuditEvent
    url: str  # empty when the object has no page (deleted, or not a model)


# (app_label, model) -> the pages of those objects, by object id, for the ids given.
ObjectPages = Callable[[list[str]], dict[str, str]]
_object_pages: dict[tuple[str, str], ObjectPages] = {}


def register_object_pages(app_label: str, model: str, pages: ObjectPages) -> None:
    _object_pages[(app_label, model)] = pages


def each_object(page: Callable[[str], str]) -> ObjectPages:
    """Pages built from the id alone, with no query."""

    def pages(object_ids: list[str]) -> dict[str, str]:
        urls = {}
        for object_id in object_ids:
            try:
                urls[object_id] = page(object_id)
            except NoReverseMatch:
                continue
        return urls

    return pages


def _admin_url(event: AuditEvent) -> str:
    content_type = event.content_type
    assert content_type is not None
    model = content_type.model_class()
    if model is None or not admin.site.is_registered(model):
        return ""
    try:
        return reverse(
            f"admin:{content_type.app_label}_{content_type.model}_change",
            args=[event.object_id],
        )
    except NoReverseMatch:
        return ""


def recent_changes() -> list[Change]:
    events = list(AuditEvent.objects.select_related("actor", "content_type")[:RECENT_LIMIT])
    ids: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        if event.content_type is not None and event.object_id:
            ids[(event.content_type.app_label, event.content_type.model)].append(event.object_id)
    pages = {
        model: _object_pages[model](object_ids)
        for model, object_ids in ids.items()
        if model in _object_pages
    }
    changes = []
    for event in events:
        url = ""
        if event.content_type is not None and event.object_id:
            model = (event.content_type.app_label, event.content_type.model)
            url = pages[model].get(event.object_id, "") if model in pages else _admin_url(event)
        changes.append(Change(event, url))
    return changes


def changes_context() -> dict[str, Any]:
    return {"recent_changes": recent_changes()}


def toggles_off_context() -> dict[str, Any]:
    return {"toggles_off": list(FeatureToggle.objects.filter(enabled=False))}
