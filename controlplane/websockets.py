"""What a websocket handshake gets at a path no consumer serves
(the routes are in `controlplane.asgi_routes`)."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer

# Closed before accepting: the server answers the handshake with 403. The code is
# what a client would see had the connection been accepted: "not found", 4000 + 404.
NOT_FOUND = 4404


class NoSuchSocket(AsyncWebsocketConsumer):
    """Refuses the handshake cleanly, where Channels' router would raise (an HTTP 500
    and a logged traceback) for a path it has no route for."""

    async def connect(self) -> None:
        await self.close(code=NOT_FOUND)
