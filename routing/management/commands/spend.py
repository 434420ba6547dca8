from __future__ import annotations

import json
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from controlplane.money import dollars, exact_text
from routing.budgets import BudgetSpend, budget_day, resets_at, spend_on

HEADERS = ("Budget", "Limit", "Spent", "Reserved", "Remaining", "Used")
NUMERIC = {"Limit", "Spent", "Reserved", "Remaining", "Used"}


class Command(BaseCommand):
    help = "Today's spend against each enabled daily budget (a day in settings.TIME_ZONE)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        parser.add_argument("--day", help="Another budget day, as YYYY-MM-DD.")

    def handle(self, *args: Any, **options: Any) -> None:
        day = self._day(options["day"])
        rows = spend_on(day)
        if options["json"]:
            self.stdout.write(json.dumps(_as_json(day, rows), indent=2))
            return
        zone = timezone.get_default_timezone_name()
        self.stdout.write(
            f"Spend on {day.isoformat()} ({zone}); resets at {resets_at(day).isoformat()}"
        )
        if not rows:
            self.stdout.write("No budgets are enabled. An Owner adds them in Control > Budgets.")
            return
        self.stdout.write(_table([_cells(row) for row in rows]))

    def _day(self, text: str | None) -> date:
        if not text:
            return budget_day()
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise CommandError(f"--day wants a date as YYYY-MM-DD, not '{text}'.") from None


def _percent(row: BudgetSpend) -> str:
    return "—" if row.percent is None else f"{row.percent}%"


def _cells(row: BudgetSpend) -> tuple[str, ...]:
    return (
        str(row.budget),
        dollars(row.limit),
        dollars(row.spent),
        dollars(row.reserved),
        dollars(row.remaining),
        _percent(row),
    )


def _table(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(cells[i]) for cells in [HEADERS, *lines]) for i in range(len(HEADERS))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if header in NUMERIC else cell.ljust(width)
            for cell, width, header in zip(cells, widths, HEADERS, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(HEADERS), rule, *(line(cells) for cells in lines)])


def _as_json(day: date, rows: list[BudgetSpend]) -> dict[str, Any]:
    return {
        "day": day.isoformat(),
        "time_zone": timezone.get_default_timezone_name(),
        "resets_at": resets_at(day).isoformat(),
        "budgets": [
            {
                "id": row.budget.pk,
                "budget": str(row.budget),
                "scope": row.budget.scope,
                "limit": exact_text(row.limit),
                "spent": exact_text(row.spent),
                "reserved": exact_text(row.reserved),
                "remaining": exact_text(row.remaining),
                "percent": None if row.percent is None else exact_text(row.percent),
            }
            for row in rows
        ],
    }
