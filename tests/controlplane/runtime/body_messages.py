"""An ASGI application that answers how many messages a request's body came in, and
how many bytes: served by daphne's command line, as the control plane is, with
`hand_on_bodies_whole` applied as `controlplane.asgi` applies it on import."""

from __future__ import annotations

from typing import Any

from controlplane.runtime.serving import hand_on_bodies_whole

hand_on_bodies_whole()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    messages, size = 0, 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        messages += 1
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"{messages} {size}".encode()})
