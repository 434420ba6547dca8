"""One way to publish live events to browsers: a channel-layer group send on commit.

Producers send ids and small data; consumers render the HTML. The layer is a
delivery hint, not storage: whatever must not be lost is persisted first and
replayed by the consumer on (re)connect.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

HOME_GROUP = "home"


def publish(group: str, event_type: str, **data: Any) -> None:
    """Send `{"type": event_type, **data}` to `group` once the transaction commits."""
    message = {"type": event_type, **data}
    transaction.on_commit(lambda: _send(group, message))


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        # A live update is best effort: the page shows the same data on reload.
        log.exception("could not publish %s to %s", message["type"], group)
