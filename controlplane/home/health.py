"""Home's System health: the probes of what the control plane depends on, judged
together with what the apps registered as their verdict on the system (the self-heal
diagnosis). The card's severity is the worst of them all: every probe up while the
latest diagnosis says critical is critical, never all green."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.health import Probe, probe_all

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY_RANK = {OK: 0, WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True)
class Verdict:
    """An app's judgement: its worst severity, a sentence, what is wrong (worst
    first) and where to see more."""

    source: str
    severity: str
    summary: str
    url: str = ""
    problems: list[str] = field(default_factory=list)


Judge = Callable[[], Verdict | None]
_judges: dict[str, Judge] = {}


def register_health_judge(name: str, judge: Judge) -> None:
    """`judge()` says how the system is by its app's lights (None: nothing to say)."""
    _judges[name] = judge


def worst(*severities: str) -> str:
    return max(severities, key=lambda s: SEVERITY_RANK.get(s, 0), default=OK)


@dataclass(frozen=True)
class SystemHealth:
    probes: list[Probe]
    verdicts: list[Verdict]

    @property
    def severity(self) -> str:
        probes = CRITICAL if any(not probe.ok for probe in self.probes) else OK
        return worst(probes, *(verdict.severity for verdict in self.verdicts))

    @property
    def probes_down(self) -> list[Probe]:
        return [probe for probe in self.probes if not probe.ok]


def system_health_context() -> dict[str, Any]:
    verdicts = [verdict for judge in _judges.values() if (verdict := judge()) is not None]
    return {"system_health": SystemHealth(probe_all(), verdicts)}
