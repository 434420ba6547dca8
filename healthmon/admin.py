from __future__ import annotations

from healthmon import ingest_key_admin  # noqa: F401  (registers the ingest keys' admin)
