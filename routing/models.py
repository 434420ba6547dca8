"""Models of the Routing part of the product."""

from __future__ import annotations
