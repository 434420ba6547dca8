"""The periodic evaluation: every enabled rule, its ended episodes cleared and its
new conditions opened, as of one moment (`now`, explicit in tests)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from healthmon.alerts.conditions import CONDITIONS
from healthmon.alerts.episodes import clear_episodes, open_episodes
from healthmon.models import Alert, AlertRule

log = logging.getLogger(__name__)

RULE_DISABLED = "the rule was disabled"
RULE_CHANGED_KIND = "the rule now watches something else"


@dataclass
class Evaluation:
    opened: list[Alert] = field(default_factory=list)
    cleared: list[Alert] = field(default_factory=list)


def evaluate_alerts(now: datetime | None = None) -> Evaluation:
    now = now or timezone.now()
    result = Evaluation()
    for rule in AlertRule.objects.prefetch_related("channels"):
        open_alerts = list(Alert.objects.open().filter(rule=rule).select_related("fingerprint"))
        if not rule.enabled:
            endings = dict.fromkeys((alert.pk for alert in open_alerts), RULE_DISABLED)
            result.cleared += clear_episodes(rule, endings, now)
            continue
        # An Owner may turn a rule into another kind: its episodes of the old kind end.
        endings = {a.pk: RULE_CHANGED_KIND for a in open_alerts if a.kind != rule.kind}
        current = [alert for alert in open_alerts if alert.kind == rule.kind]
        condition = CONDITIONS[rule.kind]
        endings.update(condition.ended(rule, current, now))
        result.cleared += clear_episodes(rule, endings, now)
        result.opened += open_episodes(rule, condition.firing(rule, now), now)
    if result.opened or result.cleared:
        log.info("alerts: %d opened, %d cleared", len(result.opened), len(result.cleared))
    return result
