"""The channel-layer probe of /healthz cleans up after itself: with Redis's pub/sub
layer (scale mode) every probe would otherwise leave a subscription behind."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from controlplane import health


def _channels_held() -> int:
    layer = get_channel_layer()
    # The pub/sub layer keeps one layer per event loop; the others are themselves.
    inner = layer._get_layer() if hasattr(layer, "_get_layer") else layer
    return len(inner.channels)


@pytest.mark.django_db
def test_channel_layer_probes_leave_no_channel_behind() -> None:
    async def probe_three_times() -> tuple[int, int]:
        before = _channels_held()
        for _ in range(3):
            await sync_to_async(health._channel_layer)()
        return before, _channels_held()

    before, after = async_to_sync(probe_three_times)()

    assert after == before
