"""Long polling: fetching Telegram updates with `getUpdates` for the bots that have
no public webhook (the embedded mode's default).

Where to resume is not kept apart from the work: it is the highest `update_id`
recorded in `TelegramUpdate` plus one, and an update is recorded in the same
transaction as its effects (`controlplane.telegram_updates`). Asking for updates
from that offset confirms, to Telegram, every update before it. So after a restart
(or a crash mid-batch) polling resumes just past the last update whose effects
committed: none is handled twice, none is lost (Telegram keeps unconfirmed updates
for 24 hours).

`TelegramPoller` runs the loop for every enabled polling Telegram integration:
`bin/manage telegram_poll` in scale mode, a thread of the web process in the embedded
mode (`start_in_process_poller`). Faults back off without stopping the loop: a rate
limit waits Telegram's `retry_after`, an outage or a refused token waits longer and
shows on the integration's row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.db.models import Max, OuterRef, Subquery
from django.utils import timezone

from controlplane.models import Integration, TelegramUpdate
from controlplane.telegram import (
    TelegramAuthError,
    TelegramConflict,
    TelegramError,
    TelegramRateLimited,
)
from controlplane.telegram_integration import ALLOWED_UPDATES, client_for, uses_webhook
from controlplane.telegram_updates import handle_update

log = logging.getLogger(__name__)

BACKOFF_MAX_SECONDS = 300.0
IDLE_SECONDS = 30.0  # with no polling integration, how often to look for one
# With several bots, each long poll is shorter so that none waits on the others.
SHARED_POLL_SECONDS = 2


def resume_offset(integration: Integration) -> int | None:
    last = TelegramUpdate.objects.filter(integration=integration).aggregate(last=Max("update_id"))[
        "last"
    ]
    return None if last is None else last + 1


def poll_once(integration: Integration, timeout: int, **client_options: Any) -> list[str]:
    """One getUpdates from where the integration left off; each update's outcome."""
    with client_for(integration, **client_options) as client:
        updates = client.get_updates(resume_offset(integration), timeout, ALLOWED_UPDATES)
        ordered = sorted(
            updates, key=lambda u: u["update_id"] if type(u.get("update_id")) is int else 0
        )
        return [handle_update(integration, update, client) for update in ordered]


def polling_integrations() -> list[Integration]:
    telegram = Integration.objects.filter(kind=Integration.Kind.TELEGRAM, enabled=True)
    return [integration for integration in telegram if not uses_webhook(integration)]


def forget_old_updates() -> int:
    """Drop old update records, keeping each bot's newest (where polling resumes)."""
    cutoff = timezone.now() - timedelta(days=settings.TELEGRAM_UPDATE_RECORD_DAYS)
    newest = (
        TelegramUpdate.objects.filter(integration=OuterRef("integration"))
        .order_by("-update_id")
        .values("pk")[:1]
    )
    old = TelegramUpdate.objects.filter(received_at__lt=cutoff).exclude(pk=Subquery(newest))
    deleted, _ = old.delete()
    return deleted


class TelegramPoller:
    """The polling loop. `wait` is how it pauses (the stop event's wait; tests pass
    their own), `names` limits it to some integrations."""

    def __init__(
        self,
        names: list[str] | None = None,
        stop: threading.Event | None = None,
        **client_options: Any,
    ) -> None:
        self.names = names
        self.stop = stop or threading.Event()
        self.client_options = client_options
        self.not_before: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.wait: Callable[[float], object] = self.stop.wait

    def run(self) -> None:
        forgotten_at = 0.0
        while not self.stop.is_set():
            close_old_connections()
            if time.monotonic() - forgotten_at > 3600:
                forget_old_updates()
                forgotten_at = time.monotonic()
            if not self.cycle():
                self.wait(IDLE_SECONDS)

    def cycle(self) -> bool:
        """Poll each due integration once; False when there is none to poll."""
        integrations = polling_integrations()
        if self.names is not None:
            integrations = [i for i in integrations if i.name in self.names]
        if not integrations:
            return False
        timeout = (
            settings.TELEGRAM_POLL_TIMEOUT_SECONDS
            if len(integrations) == 1
            else min(SHARED_POLL_SECONDS, settings.TELEGRAM_POLL_TIMEOUT_SECONDS)
        )
        now = time.monotonic()
        due = [i for i in integrations if self.not_before.get(i.pk, 0.0) <= now]
        if not due:
            self.wait(max(0.0, min(self.not_before[i.pk] for i in integrations) - now))
            return True
        for integration in due:
            if self.stop.is_set():
                break
            self.poll(integration, timeout)
        return True

    def poll(self, integration: Integration, timeout: int) -> None:
        try:
            poll_once(integration, timeout, **self.client_options)
        except TelegramRateLimited as exc:
            self._back_off(integration, exc, float(exc.retry_after))
        except (TelegramAuthError, TelegramConflict) as exc:
            self._back_off(integration, exc, BACKOFF_MAX_SECONDS)
        except TelegramError as exc:
            failures = self.failures.get(integration.pk, 0) + 1
            self.failures[integration.pk] = failures
            self._back_off(integration, exc, min(BACKOFF_MAX_SECONDS, 2.0**failures))
        else:
            self.failures.pop(integration.pk, None)
            self.not_before.pop(integration.pk, None)
            integration.clear_error()

    def _back_off(self, integration: Integration, error: TelegramError, seconds: float) -> None:
        log.warning(
            "Telegram integration %s: polling paused %.0f s: %s", integration.name, seconds, error
        )
        integration.record_error(f"Polling: {error}")
        self.not_before[integration.pk] = time.monotonic() + seconds


_in_process: TelegramPoller | None = None


def start_in_process_poller() -> TelegramPoller:
    """The embedded mode's poller: a daemon thread of the web process."""
    global _in_process
    if _in_process is None:
        _in_process = TelegramPoller()
        threading.Thread(
            target=_run_logged, args=(_in_process,), name="telegram-poller", daemon=True
        ).start()
    return _in_process


def _run_logged(poller: TelegramPoller) -> None:
    while not poller.stop.is_set():
        try:
            poller.run()
        except Exception:
            log.exception("the Telegram poller failed; it starts again in a minute")
            poller.wait(60)
