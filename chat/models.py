"""Models of the Chat part of the product."""

from __future__ import annotations
