"""One way to publish live events to browsers: a channel-layer group send on commit.

Producers send ids and small data; consumers render the HTML. The layer is a
delivery hint, not storage: whatever must not be lost is persisted first and
replayed by the consumer on (re)connect. The sending itself happens on a thread of
its own (`controlplane.runtime.publisher`), so a producer never waits for the layer.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from controlplane.runtime.publisher import publisher

HOME_GROUP = "home"


def publish(group: str, event_type: str, /, **data: Any) -> None:
    """Send `{"type": event_type, **data}` to `group` once the transaction commits.

    Positional-only, so `data` may carry keys named `group` or `event_type`."""
    message = {"type": event_type, **data}
    transaction.on_commit(lambda: _send(group, message))


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        publisher.submit(layer, group, message)


class Coalescer:
    """Turns a hot producer's events (a gateway call's spend, hundreds a second) into
    at most one send per `seconds` per group and event type in this process. The
    first is sent at once; those that follow within the interval become one send at
    its end, so the last change is never left unannounced. Only the event's type is
    sent: its consumers read the current state from the database anyway."""

    clock = staticmethod(time.monotonic)  # tests drive a fake one, and a fake timer
    timer: Any = threading.Timer

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._waiting: set[tuple[str, str]] = set()

    def announce(self, group: str, event_type: str) -> None:
        """Once the transaction commits: send now, or once at the interval's end."""
        transaction.on_commit(lambda: self._due(group, event_type))

    def _due(self, group: str, event_type: str) -> None:
        key = (group, event_type)
        with self._lock:
            if key in self._waiting:
                return
            wait = self._last.get(key, float("-inf")) + self.seconds - self.clock()
            if wait > 0:
                self._waiting.add(key)
                timer = self.timer(wait, self._send_waiting, args=(key,))
                timer.daemon = True
                timer.start()
                return
            self._last[key] = self.clock()
        _announce(group, event_type)

    def _send_waiting(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._waiting.discard(key)
            self._last[key] = self.clock()
        _announce(*key)


def _announce(group: str, event_type: str) -> None:
    """Apart from `_send`, so tests of a producer's events see those alone (the
    `published` fixture) and tests of Home's announcements these (`announced`)."""
    _send(group, {"type": event_type})


# Home's cards re-read what changed; one announcement a second per process is plenty.
home_announcements = Coalescer(seconds=1.0)
