"""ASGI entry point, served by daphne: HTTP through Django (except the `/v1`
endpoints of `controlplane.asgi_routes`), websockets through Channels (the routes of
`controlplane.asgi_routes`)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from controlplane.asgi_routes import http_endpoints, websocket_urlpatterns  # noqa: E402
from controlplane.runtime.http_endpoints import HTTPRouter  # noqa: E402
from controlplane.runtime.serving import (  # noqa: E402
    freeze_startup_objects,
    hand_on_bodies_whole,
    skip_twisted_form_parsing,
)
from controlplane.websockets import SameOriginValidator  # noqa: E402

skip_twisted_form_parsing()  # daphne hands the raw body on; Django parses forms
hand_on_bodies_whole()  # in one message, not 8 KB at a time
application = ProtocolTypeRouter(
    {
        "http": HTTPRouter(django_asgi_app, http_endpoints),
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

if settings.EMBEDDED_SCHEDULER:
    from controlplane.background import start_embedded_scheduler

    start_embedded_scheduler()
    if settings.TELEGRAM_POLL_IN_PROCESS:
        from controlplane.telegram_polling import start_in_process_poller

        start_in_process_poller()

freeze_startup_objects()  # what is loaded by now lives as long as the process
