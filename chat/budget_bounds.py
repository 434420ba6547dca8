"""The bounds of a run's budgets: what a person may ask for and what the loop can use.

Every budget input (the retry form, a mode's `RunBudget` in the admin, `open_run`'s
limits) is checked against these, the models carry them as validators and the
database as CHECK constraints, so a value the loop cannot use (a step count past
PostgreSQL's integer, a cost past money's 30 digits, which SQLite would store and
then fail to read back) is refused where it is typed, never stored.

The ceilings: a thousand steps is far past any seeded mode (30 at most); the time
budget stays within the run task's own time limit (`chat.tasks`), so the loop's clock
stops the run before the task's backstop does; a thousand dollars is a run's cost an
Owner may still mean; a hundred retries of one failure is already a loop.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Q

STEPS_CEILING = 1000
WALL_CLOCK_CEILING_SECONDS = 3600
COST_FLOOR = Decimal("0.000001")
COST_CEILING = Decimal("1000")
RETRIES_CEILING = 100

BUDGET_BOUNDS: dict[str, tuple[Decimal, Decimal]] = {
    "max_steps": (Decimal(1), Decimal(STEPS_CEILING)),
    "max_wall_clock_seconds": (Decimal(1), Decimal(WALL_CLOCK_CEILING_SECONDS)),
    "max_cost": (COST_FLOOR, COST_CEILING),
    "max_retries_per_fingerprint": (Decimal(1), Decimal(RETRIES_CEILING)),
}
WHOLE_NUMBER_BUDGETS = frozenset(
    {"max_steps", "max_wall_clock_seconds", "max_retries_per_fingerprint"}
)
BUDGET_WORDS = {
    "max_steps": "the step budget",
    "max_wall_clock_seconds": "the time budget (seconds)",
    "max_cost": "the cost budget (USD)",
    "max_retries_per_fingerprint": "the retries per failure",
}


def _typed(name: str, value: Decimal) -> Any:
    return int(value) if name in WHOLE_NUMBER_BUDGETS else value


def low(name: str) -> Any:
    return _typed(name, BUDGET_BOUNDS[name][0])


def high(name: str) -> Any:
    return _typed(name, BUDGET_BOUNDS[name][1])


def validators(name: str) -> list[Any]:
    return [MinValueValidator(low(name)), MaxValueValidator(high(name))]


def in_bounds(name: str) -> Q:
    """The CHECK constraint's condition for budget `name`."""
    return Q(**{f"{name}__gte": low(name), f"{name}__lte": high(name)})


def problem(name: str, value: Any) -> str:
    """What is wrong with `value` as budget `name`, in words ("" when nothing)."""
    words = BUDGET_WORDS.get(name, name)
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return f"{words} must be a number, not {str(value)[:40]!r}"
    if not number.is_finite():
        return f"{words} must be a number, not {value}"
    if name in WHOLE_NUMBER_BUDGETS and number != number.to_integral_value():
        return f"{words} must be a whole number"
    if not low(name) <= number <= high(name):
        shown = f"{number:.6g}" if abs(number.adjusted()) > 12 else f"{number.normalize():f}"
        return f"{words} must be between {low(name)} and {high(name)}, not {shown}"
    return ""


def clamped(name: str, value: Any) -> Any:
    """`value` brought within the bounds of budget `name` (its floor when unreadable)."""
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return low(name)
    if not number.is_finite():
        return high(name) if number > 0 else low(name)
    bounded = min(max(number, BUDGET_BOUNDS[name][0]), BUDGET_BOUNDS[name][1])
    return _typed(name, bounded)
