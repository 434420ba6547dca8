"""Alerts only on meaningful change: rules (`healthmon.models.AlertRule`) evaluated
every minute from stored counts (`conditions`), each condition an episode opened and
cleared once (`episodes`), told through the notification channels (`messages`).

Entry point: `evaluate_alerts(now=None)` (the periodic task `healthmon.tasks.evaluate_alerts`).
"""

from __future__ import annotations
