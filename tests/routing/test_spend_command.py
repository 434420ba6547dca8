from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from routing.models import Budget, OperationLog
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


# Per operation kind


@pytest.fixture
def calls_of_every_kind(noon_in_new_york: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def log(request_id: str, kind: str, cost: str, **fields: Any) -> None:
        OperationLog.objects.create(
            request_id=request_id, operation=kind, kind=kind, cost=Decimal(cost), **fields
        )

    log("c1", "chat", "0.003793")
    log("c2", "chat", "0.001")
    log("t1", "transcription", "0.0061437")
    log("r1", "speech", "0", status=OperationLog.Status.REFUSED)
    noon = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: noon - timedelta(days=1))
    log("old", "embedding", "5")  # the log stamps its rows: written yesterday
    monkeypatch.setattr(timezone, "now", lambda: noon)


@pytest.mark.django_db
def test_by_kind_it_prints_the_days_calls_and_cost_per_operation_kind(calls_of_every_kind):
    lines = spend("--by", "kind").splitlines()

    assert lines[0] == "Spend by operation kind on 2025-01-15 (America/New_York)"
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert rows == {
        "Chat": ["2", "$0.004793"],
        "Embeddings": ["0", "$0.00"],
        "Transcription": ["1", "$0.0061437"],
        "Speech": ["0", "$0.00"],  # a refused call costs nothing and is not counted
    }


@pytest.mark.django_db
def test_by_kind_as_json_with_exact_amounts_and_another_day(calls_of_every_kind):
    today = json.loads(spend("--by", "kind", "--json"))
    yesterday = json.loads(spend("--by", "kind", "--json", "--day", "2025-01-14"))

    assert today["kinds"][0] == {"kind": "chat", "calls": 2, "cost": "0.004793"}
    assert {row["kind"]: row["cost"] for row in yesterday["kinds"]}["embedding"] == "5"


@pytest.mark.django_db
def test_by_something_unknown_is_refused():
    with pytest.raises(CommandError, match="invalid choice"):
        spend("--by", "model")
