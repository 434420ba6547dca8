from __future__ import annotations

from healthmon.grouping.grouper import Fingerprint, Grouper, group_lines

__all__ = ["Fingerprint", "Grouper", "group_lines"]
