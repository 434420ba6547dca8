"""Models of the Health part of the product."""

from __future__ import annotations
