"""The audit trail: who changed what configuration, with before and after.

Every configuration model derives from `AuditedModel`, so a change is recorded
whichever path made it: the admin, a form, a command, the ORM (`save`, `delete`,
and queryset `update`/`delete`, which are routed through `save`/`delete`). The actor
and client address come from the request (see `AuditContextMiddleware`) or from
`acting_as()` in commands and background work.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, connections, models, transaction

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from controlplane.tiers import StaffUser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditContext:
    actor: StaffUser | None = None
    client_address: str | None = None


_NOBODY = AuditContext()
_context: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "audit_context", default=None
)


def current_context() -> AuditContext:
    return _context.get() or _NOBODY


@contextmanager
def acting_as(
    actor: StaffUser | AnonymousUser | None, client_address: str | None = None
) -> Iterator[None]:
    """Attribute the audit events written inside this block to `actor`."""
    staff = actor if actor is not None and actor.is_authenticated else None
    token = _context.set(AuditContext(staff, client_address))
    try:
        yield
    finally:
        _context.reset(token)


_reason: contextvars.ContextVar[str] = contextvars.ContextVar("audit_reason", default="")


@contextmanager
def because(reason: str) -> Iterator[None]:
    """Record `reason` in the `after` of the audit events written inside this block: a
    change made on a page that asks why (a toggle switched on the Toggles page) keeps
    the why beside the before and after, in the same event the admin path writes."""
    token = _reason.set(reason)
    try:
        yield
    finally:
        _reason.reset(token)


REDACTED = "[redacted]"


def snapshot(instance: models.Model) -> dict[str, Any]:
    """A JSON-safe view of a model's concrete fields; secrets show only as redacted."""
    values: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        value = field.value_from_object(instance)
        if getattr(field, "audit_redacted", False):
            value = REDACTED if value else ""
        values[field.attname] = value
    return json.loads(json.dumps(values, cls=DjangoJSONEncoder))


def record(
    action: str,
    target: models.Model | None = None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor: StaffUser | None = None,
    target_repr: str | None = None,
) -> Any:
    """Write one audit event. The actor defaults to the current audit context's."""
    from django.contrib.contenttypes.models import ContentType

    from controlplane.models import AuditEvent

    context = current_context()
    actor = actor if actor is not None else context.actor
    reason = _reason.get()
    if reason:
        after = {**(after or {}), "reason": reason}
    event = AuditEvent.objects.create(
        action=action,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_label=actor.get_username() if actor is not None else "system",
        content_type=ContentType.objects.get_for_model(target) if target is not None else None,
        object_id=str(target.pk) if target is not None and target.pk is not None else "",
        object_repr=(target_repr or (str(target) if target is not None else ""))[:200],
        before=before,
        after=after,
        client_address=context.client_address,
    )
    from controlplane.live import HOME_GROUP, home_announcements

    # Home's recent changes follow the trail (coalesced: task moves are audited too).
    home_announcements.announce(HOME_GROUP, "home.audit")
    return event


def record_refusal(
    action: str,
    target: models.Model,
    *,
    after: dict[str, Any] | None = None,
    actor: StaffUser | None = None,
) -> None:
    """Write the audit event of a refused change so that it outlives the caller's
    transaction: a caller that rolls back after the refusal does not take it back.

    Outside a transaction of the caller's (a test's own wrapping transaction does not
    count, as `atomic(durable=True)` decides) the event is written at once. Inside one,
    a thread of its own writes it on its own connection (Django gives each thread one).
    PostgreSQL commits it beside the caller's open transaction, and this waits for it
    (for a bounded time: were the event to wait on a lock the caller holds, the caller
    goes on and the event follows once it lets go); SQLite lets one transaction write
    at a time, so there it is written when the caller's transaction ends
    (`wait_for_refusal_events` waits for that).
    """
    with ExitStack() as outside_any_transaction:
        try:
            outside_any_transaction.enter_context(transaction.atomic(durable=True))
        except RuntimeError:
            pass
        else:
            record(action, target, after=after, actor=actor)
            return
    writer = threading.Thread(
        target=contextvars.copy_context().run,
        args=(_write_refusal, action, target, after, actor),
        name=f"audit {action}",
    )
    with _refusal_writers_lock:
        _refusal_writers.add(writer)
    writer.start()
    if connection.vendor != "sqlite":
        writer.join(_REFUSAL_WRITE_WAIT_SECONDS)


_REFUSAL_WRITE_WAIT_SECONDS = 5.0
_refusal_writers: set[threading.Thread] = set()
_refusal_writers_lock = threading.Lock()


def _write_refusal(
    action: str, target: models.Model, after: dict[str, Any] | None, actor: StaffUser | None
) -> None:
    try:
        with transaction.atomic():
            record(action, target, after=after, actor=actor)
    except Exception:
        log.exception("the audit event of a refused change (%s %s) was lost", action, target)
    finally:
        connections.close_all()
        with _refusal_writers_lock:
            _refusal_writers.discard(threading.current_thread())


def wait_for_refusal_events(timeout: float | None = None) -> None:
    """Return once every refusal's audit event begun so far is written (or given up)."""
    with _refusal_writers_lock:
        writers = list(_refusal_writers)
    for writer in writers:
        writer.join(timeout)


def _action(instance: models.Model, verb: str) -> str:
    return f"{instance._meta.model_name}.{verb}"


class AuditedQuerySet(models.QuerySet[Any]):
    """Bulk changes of configuration go row by row through save/delete, so each is audited."""

    def update(self, **kwargs: Any) -> int:
        with transaction.atomic():
            rows = list(self.select_for_update())
            for row in rows:
                for name, value in kwargs.items():
                    setattr(row, name, value)
                row.save()
        return len(rows)

    def delete(self) -> tuple[int, dict[str, int]]:
        count = 0
        with transaction.atomic():
            for row in list(self):
                row.delete()
                count += 1
        return count, {self.model._meta.label: count}

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        with transaction.atomic():
            for obj in objs:
                obj.save()
        return len(objs)


class AuditedModel(models.Model):
    """A configuration model: every create, change and delete writes an audit event."""

    objects = AuditedQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        with transaction.atomic():
            stored = self.stored_instance()
            super().save(*args, **kwargs)
            after = snapshot(self)
            if stored is None:
                record(_action(self, "created"), self, after=after)
                return
            before = snapshot(stored)
            changed = {k for k in after if before.get(k) != after[k]}
            # A secret snapshots as "[redacted]" whatever its value, so a new secret
            # would look unchanged: compare secrets by their real values instead.
            changed |= {
                field.attname
                for field in self._meta.concrete_fields
                if getattr(field, "audit_redacted", False)
                and field.value_from_object(stored) != field.value_from_object(self)
            }
            if changed:
                record(
                    _action(self, "changed"),
                    self,
                    before={k: before.get(k) for k in sorted(changed)},
                    after={k: after[k] for k in sorted(changed)},
                )

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        with transaction.atomic():
            record(_action(self, "deleted"), self, before=snapshot(self))
            return super().delete(*args, **kwargs)

    def stored_instance(self) -> Any:
        if self._state.adding or self.pk is None:
            return None
        return type(self)._base_manager.filter(pk=self.pk).first()
