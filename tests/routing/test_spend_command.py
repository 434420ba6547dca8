from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from routing.models import Budget
from routing.reservations import reserve, settle


def spend(*args: str) -> str:
    out = StringIO()
    call_command("spend", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def noon_in_new_york(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.TIME_ZONE = "America/New_York"
    at = datetime.fromisoformat("2025-01-15T12:00:00-05:00")
    monkeypatch.setattr(timezone, "now", lambda: at)


@pytest.fixture
def spending(noon_in_new_york: None, operator: Any) -> dict[str, Budget]:
    everything = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("10"))
    chat = Budget.objects.create(
        scope=Budget.Scope.OPERATION, operation="chat", daily_limit=Decimal("4")
    )
    Budget.objects.create(
        scope=Budget.Scope.SERVICE, service="billing", daily_limit=Decimal("1"), enabled=False
    )
    settle(reserve("done", Decimal("2"), [everything, chat]), Decimal("2.5"))
    reserve("in-flight", Decimal("0.000075"), [everything])
    return {"global": everything, "chat": chat}


@pytest.mark.django_db
def test_it_prints_todays_spend_per_enabled_budget_as_a_table(spending):
    lines = spend().splitlines()
    assert lines[0] == (
        "Spend on 2025-01-15 (America/New_York); resets at 2025-01-16T00:00:00-05:00"
    )
    assert lines[1].split() == ["Budget", "Limit", "Spent", "Reserved", "Remaining", "Used"]
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[3:]}
    assert rows["global budget"][-5:] == ["$10.00", "$2.50", "$0.000075", "$7.499925", "25.0%"]
    assert rows["operation chat budget"][-5:] == ["$4.00", "$2.50", "$0.00", "$1.50", "62.5%"]
    assert "service billing budget" not in rows


@pytest.mark.django_db
def test_it_prints_json_with_exact_amounts(spending):
    report = json.loads(spend("--json"))
    assert report["day"] == "2025-01-15"
    assert report["time_zone"] == "America/New_York"
    assert report["resets_at"] == "2025-01-16T00:00:00-05:00"
    by_name = {row["budget"]: row for row in report["budgets"]}
    assert set(by_name) == {"global budget", "operation chat budget"}
    assert by_name["global budget"] == {
        "id": spending["global"].pk,
        "budget": "global budget",
        "scope": "global",
        "limit": "10",
        "spent": "2.5",
        "reserved": "0.000075",
        "remaining": "7.499925",
        "percent": "25",
    }


@pytest.mark.django_db
def test_it_shows_another_day_when_asked(spending):
    report = json.loads(spend("--json", "--day", "2025-01-14"))
    assert report["day"] == "2025-01-14"
    assert {row["spent"] for row in report["budgets"]} == {"0"}


@pytest.mark.django_db
def test_a_zero_limit_shows_no_percentage(noon_in_new_york):
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("0"))
    assert spend().splitlines()[3].split()[-1] == "—"
    assert json.loads(spend("--json"))["budgets"][0]["percent"] is None


@pytest.mark.django_db
def test_it_says_so_when_no_budget_is_enabled(noon_in_new_york):
    assert "No budgets are enabled" in spend()
    assert json.loads(spend("--json"))["budgets"] == []


@pytest.mark.django_db
def test_it_rejects_a_day_that_is_not_a_date():
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        spend("--day", "yesterday")
