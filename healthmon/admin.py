"""The health monitor in the operator panel."""

from __future__ import annotations

from healthmon import crawl_admin  # noqa: F401  (registers crawl records)
