"""What each kind of rule watches, read from storage only: when it fires and when
an episode of it has ended.

- **new fingerprint**: a fingerprint at or over the rule's level first seen within
  its quiet window, never alerted by this rule before. Ends when it is resolved or
  ignored, or once it has not been seen for the quiet window.
- **regression**: a fingerprint regressed (seen again after being resolved), this
  regression not alerted yet. Ends when it is no longer regressed (resolved again,
  ignored, or marked unresolved) or once it has been quiet for the quiet window.
- **spike**: a fingerprint's count in the last `window_minutes` complete minutes is
  at least `floor` and over `multiplier` times the count of a window of the same
  length in the `baseline_minutes` before it. Only fingerprints older than the
  baseline (a brand-new one is the new-fingerprint rule's). Ends when the window's
  rate is back under either bar (against the trailing baseline, so a spike that
  lasts longer than the baseline becomes the new normal) or it is ignored.
- **sustained 5xx**: each of a service's last `minutes` complete minutes had HTTP
  requests and answered at least `threshold` of them 5xx, and together at least
  `min_requests`. Ends when the share over the last `minutes` minutes is under the
  threshold. Minutes without requests say nothing: a service that went silent stays
  open until requests show it recovered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef, Q, QuerySet, Sum

from healthmon.alerts.episodes import Finding
from healthmon.levels import Level
from healthmon.models import Alert, AlertKind, AlertRule, Fingerprint, MinuteCount, ServiceMinute

Status = Fingerprint.Status


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _fingerprints(rule: AlertRule) -> QuerySet[Fingerprint]:
    found = Fingerprint.objects.filter(level__gte=rule.min_level)
    return found.filter(service=rule.service) if rule.service else found


def _label(fingerprint: Fingerprint) -> str:
    return f"{Level(fingerprint.level).label}: {fingerprint.template[:160]}"


# --- new fingerprint ------------------------------------------------------------------


def new_fingerprints(rule: AlertRule, now: datetime) -> list[Finding]:
    recent = now - timedelta(minutes=rule.quiet_minutes)
    found = (
        _fingerprints(rule)
        .filter(first_seen__gte=recent, first_seen__lte=now, last_seen__gte=recent)
        .exclude(status__in=[Status.RESOLVED, Status.IGNORED])
        .exclude(Exists(Alert.objects.filter(rule=rule, fingerprint=OuterRef("pk"))))
        .order_by("-count", "id")
    )
    return [
        Finding(
            service=fingerprint.service,
            since=fingerprint.first_seen,
            summary=f"New {_label(fingerprint)}",
            fingerprint=fingerprint,
            details={
                "first_seen": fingerprint.first_seen.isoformat(),
                "occurrences": fingerprint.count,
            },
            weight=fingerprint.count,
        )
        for fingerprint in found
    ]


def new_fingerprint_ended(
    rule: AlertRule, alerts: Sequence[Alert], now: datetime
) -> dict[int, str]:
    return _fingerprint_ended(rule, alerts, now, still=(Status.UNRESOLVED, Status.REGRESSED))


def _fingerprint_ended(
    rule: AlertRule, alerts: Sequence[Alert], now: datetime, still: tuple[str, ...]
) -> dict[int, str]:
    quiet_since = now - timedelta(minutes=rule.quiet_minutes)
    endings = {}
    for alert in alerts:
        fingerprint = alert.fingerprint
        assert fingerprint is not None  # fingerprint kinds always have one
        if fingerprint.status not in still:
            endings[alert.pk] = f"it is {fingerprint.status}"
        elif fingerprint.last_seen < quiet_since:
            endings[alert.pk] = f"not seen for {rule.quiet_minutes} min"
    return endings


# --- regression -----------------------------------------------------------------------


def regressions(rule: AlertRule, now: datetime) -> list[Finding]:
    recent = now - timedelta(minutes=rule.quiet_minutes)
    this_regression_told = Alert.objects.filter(
        rule=rule, fingerprint=OuterRef("pk"), since=OuterRef("regressed_at")
    )
    found = (
        _fingerprints(rule)
        .filter(status=Status.REGRESSED, regressed_at__isnull=False, last_seen__gte=recent)
        .exclude(Exists(this_regression_told))
        .order_by("-count", "id")
    )
    findings = []
    for fingerprint in found:
        assert fingerprint.regressed_at is not None
        findings.append(
            Finding(
                service=fingerprint.service,
                since=fingerprint.regressed_at,
                summary=f"Regression {_label(fingerprint)}",
                fingerprint=fingerprint,
                details={
                    "regressed_at": fingerprint.regressed_at.isoformat(),
                    "occurrences": fingerprint.count,
                },
                weight=fingerprint.count,
            )
        )
    return findings


def regression_ended(rule: AlertRule, alerts: Sequence[Alert], now: datetime) -> dict[int, str]:
    return _fingerprint_ended(rule, alerts, now, still=(Status.REGRESSED,))


# --- spike ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SpikeCounts:
    window: int
    baseline: int

    def spiking(self, rule: AlertRule) -> bool:
        # window / window_minutes > multiplier * baseline / baseline_minutes, in integers
        # and decimals only (no float rounding at the bar).
        return self.window >= rule.floor and (
            self.window * rule.baseline_minutes
            > rule.multiplier * self.baseline * rule.window_minutes
        )


def _spike_counts(
    rule: AlertRule, now: datetime, fingerprints: QuerySet[Fingerprint]
) -> dict[int, SpikeCounts]:
    window_end = minute_of(now)
    window_start = window_end - timedelta(minutes=rule.window_minutes)
    baseline_start = window_start - timedelta(minutes=rule.baseline_minutes)
    rows = (
        MinuteCount.objects.filter(
            fingerprint__in=fingerprints, minute__gte=baseline_start, minute__lt=window_end
        )
        .values("fingerprint_id")
        .annotate(
            window=Sum("count", filter=Q(minute__gte=window_start), default=0),
            baseline=Sum("count", filter=Q(minute__lt=window_start), default=0),
        )
    )
    return {row["fingerprint_id"]: SpikeCounts(row["window"], row["baseline"]) for row in rows}


def spikes(rule: AlertRule, now: datetime) -> list[Finding]:
    window_start = minute_of(now) - timedelta(minutes=rule.window_minutes)
    baseline_start = window_start - timedelta(minutes=rule.baseline_minutes)
    candidates = (
        _fingerprints(rule)
        .filter(first_seen__lte=baseline_start, last_seen__gte=window_start)
        .exclude(status=Status.IGNORED)
        .exclude(Exists(Alert.objects.open().filter(rule=rule, fingerprint=OuterRef("pk"))))
    )
    counts = {
        pk: numbers
        for pk, numbers in _spike_counts(rule, now, candidates).items()
        if numbers.spiking(rule)
    }
    findings = []
    for fingerprint in Fingerprint.objects.filter(pk__in=counts).order_by("id"):
        numbers = counts[fingerprint.pk]
        findings.append(
            Finding(
                service=fingerprint.service,
                since=window_start,
                summary=f"Spike {_label(fingerprint)}",
                fingerprint=fingerprint,
                details={
                    "in_last_minutes": rule.window_minutes,
                    "occurrences": numbers.window,
                    "baseline_minutes": rule.baseline_minutes,
                    "baseline_occurrences": numbers.baseline,
                },
                weight=numbers.window,
            )
        )
    return findings


def spike_ended(rule: AlertRule, alerts: Sequence[Alert], now: datetime) -> dict[int, str]:
    ids = [alert.fingerprint_id for alert in alerts if alert.fingerprint_id is not None]
    counts = _spike_counts(rule, now, Fingerprint.objects.filter(pk__in=ids))
    endings = {}
    for alert in alerts:
        fingerprint = alert.fingerprint
        assert fingerprint is not None
        numbers = counts.get(fingerprint.pk, SpikeCounts(0, 0))
        if fingerprint.status == Status.IGNORED:
            endings[alert.pk] = "it is ignored"
        elif not numbers.spiking(rule):
            endings[alert.pk] = (
                f"{numbers.window} in the last {rule.window_minutes} min, "
                f"back under the bar (baseline {numbers.baseline} in {rule.baseline_minutes} min)"
            )
    return endings


# --- sustained 5xx --------------------------------------------------------------------


def _service_minutes(rule: AlertRule, now: datetime) -> dict[str, list[ServiceMinute]]:
    end = minute_of(now)
    minutes = ServiceMinute.objects.filter(
        minute__gte=end - timedelta(minutes=rule.minutes), minute__lt=end, http_requests__gt=0
    )
    if rule.service:
        minutes = minutes.filter(service=rule.service)
    by_service: dict[str, list[ServiceMinute]] = defaultdict(list)
    for row in minutes.order_by("service", "minute"):
        by_service[row.service].append(row)
    return by_service


def sustained_5xx(rule: AlertRule, now: datetime) -> list[Finding]:
    findings = []
    open_services = set(Alert.objects.open().filter(rule=rule).values_list("service", flat=True))
    for service, rows in _service_minutes(rule, now).items():
        requests = sum(row.http_requests for row in rows)
        errors = sum(row.http_5xx for row in rows)
        if service in open_services or requests < rule.min_requests:
            continue
        if len(rows) == rule.minutes and all(
            row.http_5xx >= rule.threshold * row.http_requests for row in rows
        ):
            findings.append(
                Finding(
                    service=service,
                    since=minute_of(now) - timedelta(minutes=rule.minutes),
                    summary=f"{100 * errors / requests:.0f}% of HTTP requests answered 5xx "
                    f"for {rule.minutes} min",
                    details={
                        "requests": requests,
                        "answered_5xx": errors,
                        "threshold": f"{100 * rule.threshold:g}%",
                    },
                    weight=errors,
                )
            )
    return findings


def sustained_5xx_ended(rule: AlertRule, alerts: Sequence[Alert], now: datetime) -> dict[int, str]:
    by_service = _service_minutes(rule, now)
    endings = {}
    for alert in alerts:
        rows = by_service.get(alert.service, [])
        requests = sum(row.http_requests for row in rows)
        errors = sum(row.http_5xx for row in rows)
        if requests and errors < rule.threshold * requests:
            endings[alert.pk] = (
                f"{100 * errors / requests:.1f}% 5xx over the last {rule.minutes} min"
            )
    return endings


@dataclass(frozen=True)
class Condition:
    firing: Callable[[AlertRule, datetime], list[Finding]]
    ended: Callable[[AlertRule, Sequence[Alert], datetime], dict[int, str]]


CONDITIONS: dict[str, Condition] = {
    AlertKind.NEW_FINGERPRINT: Condition(new_fingerprints, new_fingerprint_ended),
    AlertKind.REGRESSION: Condition(regressions, regression_ended),
    AlertKind.SPIKE: Condition(spikes, spike_ended),
    AlertKind.SUSTAINED_5XX: Condition(sustained_5xx, sustained_5xx_ended),
}
