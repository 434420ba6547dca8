"""What an approval was about, as a link a person can follow.

An approval names its subject generically (a chat run, a task, a toggle, a pull
request, a repair's execution; none for a model call through the gateway). The core
cannot import the apps above it, so the link comes from the subject itself: its
`get_absolute_url()` when it has a page of its own, else its admin page (the
operator panel shows every model, read-only to Observers).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils.text import capfirst

from controlplane.models import Approval


@dataclass(frozen=True)
class SubjectLink:
    label: str
    url: str | None  # None when the subject has no page (or no longer exists)


@dataclass(frozen=True)
class DecidedApproval:
    """A row of the Approvals page's recent decisions."""

    approval: Approval
    subject: SubjectLink | None


def subject_link(approval: Approval) -> SubjectLink | None:
    """The approval's subject as a label and URL; None when it has no subject.
    Prefetch `subject` on a list: this reads it."""
    content_type = approval.content_type
    if content_type is None:
        return None
    model = content_type.model_class()
    kind = str(capfirst(model._meta.verbose_name if model else content_type.name))
    subject = approval.subject
    if subject is None:
        return SubjectLink(f"{kind} {approval.object_id} (deleted)", None)
    return SubjectLink(_label(kind, subject), _url(subject))


def _label(kind: str, subject: models.Model) -> str:
    name = str(subject)
    # "Run #5 (completed)" names its kind already; "#12 Fix the login" does not.
    return name if name.lower().startswith(kind.lower()) else f"{kind} {name}"


def _url(subject: models.Model) -> str | None:
    own_page = getattr(subject, "get_absolute_url", None)
    if callable(own_page):
        return str(own_page())
    meta = subject._meta
    try:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[subject.pk])
    except NoReverseMatch:
        return None
