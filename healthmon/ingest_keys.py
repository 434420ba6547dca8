"""Ingest keys: what a service pushes its logs over OTLP with. A key belongs to one
source; it is shown once, stored as a digest (`controlplane.api_tokens`), compared in
constant time, and revocable. Issuing and revoking are audited."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane import api_tokens, audit
from healthmon.models import IngestKey, LogSource

# `last_used_at` is written at most this often per key, not on every push.
TOUCH_EVERY = timedelta(minutes=1)


def assign_secret(key: IngestKey) -> str:
    """Give an unsaved key its secret; returns the raw key, to show once."""
    key.lookup, raw, key.digest = api_tokens.new_token(IngestKey.PREFIX)
    return raw


def issue_key(source: LogSource, name: str) -> tuple[IngestKey, str]:
    """A new key for `source`: (key, raw key to show once)."""
    key = IngestKey(source=source, name=name)
    raw = assign_secret(key)
    with transaction.atomic():
        key.save()
        record_issued(key)
    return key, raw


def record_issued(key: IngestKey) -> None:
    audit.record(
        "ingest_key.created",
        key,
        after={"source": key.source.name, "name": key.name, "lookup": key.lookup},
    )


def revoke_key(key: IngestKey) -> bool:
    """Revoke a key (audited); False when it was revoked already."""
    with transaction.atomic():
        revoked = IngestKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if not revoked:
            return False
        key.refresh_from_db(fields=["revoked_at"])
        audit.record(
            "ingest_key.revoked",
            key,
            before={"revoked_at": None},
            after={"revoked_at": key.revoked_at.isoformat() if key.revoked_at else None},
        )
    return True


def authenticate(raw: str) -> IngestKey | None:
    """The active key `raw` is, with its source; None for anything else."""
    lookup = api_tokens.lookup_of(raw, IngestKey.PREFIX)
    if lookup is None:
        return None
    key = (
        IngestKey.objects.select_related("source")
        .filter(lookup=lookup, revoked_at__isnull=True)
        .first()
    )
    if key is None or not api_tokens.matches(key.digest, raw):
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
        # Conditional, so concurrent pushes write it once.
        IngestKey.objects.filter(pk=key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - TOUCH_EVERY)
        ).update(last_used_at=now)
        key.last_used_at = now
    return key
