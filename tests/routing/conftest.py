from __future__ import annotations

from tests.live_server import live_server_url  # noqa: F401  (the fixture, for these tests)
