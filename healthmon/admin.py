"""The health monitor in the operator panel."""

from __future__ import annotations

from healthmon import (
    alert_admin,  # noqa: F401  (registers alert rules and alert history)
    crawl_admin,  # noqa: F401  (registers crawl records)
)
