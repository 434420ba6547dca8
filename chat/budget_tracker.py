"""A run's budgets: steps, wall clock, cost, and retries per failure fingerprint.

The limits are copied onto the run when it starts (from the mode's `RunBudget`,
seeded from the routing policies), so changing a mode's budget never moves the
goalposts of a run under way. The run's cost is the sum of the `CallResult` costs of
its model calls, exactly as the routing cost log has them. Wall-clock time counts from
the first pickup by a worker and leaves out the time spent waiting for an approval.

Each meter is published in `budget` events as `{used, limit, percent, state}` with
state green, amber or red (`routing.budgets.meter_state`: amber from 60%, red above 85%).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from chat.models import Run, StopReason
from controlplane.money import exact_text, usd
from routing.budgets import meter_state


def meter(used: Decimal, limit: Decimal, *, shown: Any) -> dict[str, Any]:
    percent = (used * 100 / limit).quantize(Decimal("0.1")) if limit else Decimal(0)
    return {
        "used": shown(used),
        "limit": shown(limit),
        "percent": float(percent),
        "state": meter_state(percent),
    }


@dataclass(frozen=True)
class Exhausted:
    reason: StopReason
    detail: str


class BudgetTracker:
    """Reads and updates the usage on a `Run` instance; the loop saves it."""

    def __init__(self, run: Run) -> None:
        self.run = run

    # -- usage ---------------------------------------------------------------------

    def add_step(self) -> int:
        self.run.steps += 1
        return self.run.steps

    def add_cost(self, amount: Decimal) -> Decimal:
        self.run.cost = Decimal(self.run.cost) + amount
        return self.run.cost

    def record_failure(self, fingerprint: str) -> int:
        """One more failure with this fingerprint; how many there have been."""
        retries = dict(self.run.retries_by_fingerprint or {})
        retries[fingerprint] = int(retries.get(fingerprint, 0)) + 1
        self.run.retries_by_fingerprint = retries
        return retries[fingerprint]

    def wall_clock_seconds(self, now: datetime | None = None) -> Decimal:
        run = self.run
        if run.started_at is None:
            return Decimal(0)
        end = run.finished_at or now or timezone.now()
        paused = Decimal(str(run.paused_seconds or 0))
        elapsed = Decimal(str((end - run.started_at).total_seconds())) - paused
        return max(elapsed, Decimal(0)).quantize(Decimal("0.1"))

    def clock_origin(self) -> float | None:
        """When the wall clock would read 0 had the run never paused (epoch seconds):
        the page counts up from it between events. None before the first pickup."""
        run = self.run
        if run.started_at is None:
            return None
        return round(run.started_at.timestamp() + float(run.paused_seconds or 0), 3)

    # -- limits --------------------------------------------------------------------

    def wall_clock_exceeded(self) -> Exhausted | None:
        limit = self.run.max_wall_clock_seconds
        used = self.wall_clock_seconds()
        if limit and used >= limit:
            return Exhausted(
                StopReason.WALL_CLOCK, f"The run used {used:.0f} s of its {limit} s time budget."
            )
        return None

    def exhausted(self) -> Exhausted | None:
        """The first budget used up, for a run that wants another step."""
        run = self.run
        if run.steps >= run.max_steps:
            return Exhausted(
                StopReason.MAX_STEPS, f"The run used all {run.max_steps} steps of its budget."
            )
        if run.max_cost and Decimal(run.cost) >= run.max_cost:
            return Exhausted(
                StopReason.COST_BUDGET,
                f"The run spent {usd(Decimal(run.cost))} of its {usd(run.max_cost)} budget.",
            )
        return self.wall_clock_exceeded()

    # -- the event -----------------------------------------------------------------

    def meters(self) -> dict[str, Any]:
        """The `budget` event: steps, wall clock, cost, and retries per fingerprint."""
        run = self.run
        return {
            "steps": meter(Decimal(run.steps), Decimal(run.max_steps), shown=int),
            "wall_clock": meter(
                self.wall_clock_seconds(), Decimal(run.max_wall_clock_seconds), shown=float
            ),
            "cost": meter(Decimal(run.cost), Decimal(run.max_cost), shown=exact_text),
            "retries": dict(run.retries_by_fingerprint or {}),
            "retry_limit": run.max_retries_per_fingerprint,
        }
