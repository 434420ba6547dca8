"""One way to publish live events to browsers: a channel-layer group send on commit.

Producers send ids and small data; consumers render the HTML. The layer is a
delivery hint, not storage: whatever must not be lost is persisted first and
replayed by the consumer on (re)connect. The sending itself happens on a thread of
its own (`controlplane.runtime.publisher`), so a producer never waits for the layer.
"""

from __future__ import annotations

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
