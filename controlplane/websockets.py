"""What a websocket handshake gets at a path no consumer serves
(the routes are in `controlplane.asgi_routes`)."""

from __future__ import annotations

from controlplane.runtime.http_endpoints import Receive, Scope, Send

# Closed before accepting: the server answers the handshake with 403. The code is
# what a client would see had the connection been accepted: "not found", 4000 + 404.
NOT_FOUND = 4404


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse the handshake cleanly, instead of Channels' router raising (an HTTP 500
    and a logged traceback) for a path it has no route for."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": NOT_FOUND})
