"""Models of the Self-heal part of the product."""

from __future__ import annotations
