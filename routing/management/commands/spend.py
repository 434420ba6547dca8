from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from controlplane.money import dollars, exact_text
from routing.budgets import BudgetSpend, budget_day, resets_at, spend_on
from routing.insights import spend_by_kind_on

HEADERS = ("Budget", "Limit", "Spent", "Reserved", "Remaining", "Used")
KIND_HEADERS = ("Kind", "Calls", "Cost")
NUMERIC = {"Limit", "Spent", "Reserved", "Remaining", "Used", "Calls", "Cost"}


class Command(BaseCommand):
    help = (
        "Today's spend against each enabled daily budget (a day in settings.TIME_ZONE), "
        "or (--by kind) broken down by operation kind: chat, embeddings, transcription, "
        "speech."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        parser.add_argument("--day", help="Another budget day, as YYYY-MM-DD.")
        parser.add_argument(
            "--by",
            choices=["budget", "kind"],
            default="budget",
            help="Per budget (default), or per operation kind from the day's log.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        day = self._day(options["day"])
        if options["by"] == "kind":
            self._by_kind(day, as_json=options["json"])
            return
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
        self.stdout.write(_table(HEADERS, [_cells(row) for row in rows]))

    def _by_kind(self, day: date, *, as_json: bool) -> None:
        rows = spend_by_kind_on(day)
        zone = timezone.get_default_timezone_name()
        if as_json:
            kinds = [
                {"kind": row["kind"], "calls": row["calls"], "cost": exact_text(row["cost"])}
                for row in rows
            ]
            report = {"day": day.isoformat(), "time_zone": zone, "kinds": kinds}
            self.stdout.write(json.dumps(report, indent=2))
            return
        self.stdout.write(f"Spend by operation kind on {day.isoformat()} ({zone})")
        lines = [(row["label"], str(row["calls"]), dollars(row["cost"])) for row in rows]
        self.stdout.write(_table(KIND_HEADERS, lines))

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


def _table(headers: tuple[str, ...], lines: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(cells[i]) for cells in [headers, *lines]) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if header in NUMERIC else cell.ljust(width)
            for cell, width, header in zip(cells, widths, headers, strict=True)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(cells) for cells in lines)])


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
