"""`/status` from Telegram: what the system is doing in a few lines, one section per
app (runs, approvals, spend, the engine, errors), for any linked staff member, with
what anyone typed escaped; a section that fails does not take the others down."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from chat.models import ChatSession
from chat.runs import open_run
from controlplane import status_sections
from controlplane.approvals import request_approval
from controlplane.chat_commands import REFUSAL
from controlplane.status_sections import register_status_section, registered_sections
from healthmon.levels import Level
from healthmon.models import Fingerprint
from routing.budgets import budget_day
from routing.models import Budget, BudgetDay
from tests.controlplane.telegram_bots import hook_bot, linked, say, telegram
from tests.selfheal import make_task, make_worker

__all__ = ["hook_bot", "telegram"]  # fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    monkeypatch.setattr(status_sections, "_sections", dict(status_sections._sections))


def test_each_app_registers_its_section_in_order():
    assert [s.name for s in registered_sections()] == [
        "runs",
        "approvals",
        "spend",
        "engine",
        "errors",
    ]


def test_status_tells_an_observer_what_each_part_of_the_system_is_doing(
    client, telegram, hook_bot, observer, operator, owner
):
    linked(hook_bot, observer)
    run = open_run(
        ChatSession.objects.create(user=operator), user=operator, message="Hi", mode="ops"
    )
    approval = request_approval(action="toggle.set", requested_by=operator, reason="Switch it")
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    BudgetDay.objects.create(
        budget=budget, day=budget_day(), limit=Decimal(10), spent=Decimal("2.5")
    )
    make_task("Rotate the keys")
    make_task("Renew the certificate")
    make_worker("worker-1")
    make_worker("worker-2", online=False)
    now = timezone.now()
    Fingerprint.objects.create(
        service="api",
        key="k1",
        template="Timeout talking to <db> & cache",
        level=Level.ERROR,
        count=12,
        first_seen=now - timedelta(hours=1),
        last_seen=now,
    )
    Fingerprint.objects.create(
        service="api",
        key="k2",
        template="Debug noise",
        level=Level.INFO,
        count=3,
        first_seen=now,
        last_seen=now,
    )

    (reply,) = say(client, telegram, hook_bot, "/status")

    lines = reply.split("\n")
    assert lines[0].startswith("Status at ")
    assert lines[1:] == [
        "Runs: 1 active.",
        f"  #{run.pk} idle, step 0 of 8 · cost $0.00 of $0.25 (oscar-operator)",
        "Approvals: 1 pending.",
        f"  #{approval.pk} toggle.set by oscar-operator, expires in 23 h 59 min",
        "Spend today:",
        "  global budget: $2.50 of $10.00 (25.0%)",
        "Engine queue: 2 pending.",
        "Workers: 1 online of 2.",
        "Errors: 1 open fingerprint, latest:",
        "  api: Timeout talking to &lt;db&gt; &amp; cache, seen 12 times",
    ]


def test_status_with_nothing_going_on_says_so_for_each_part(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)

    (reply,) = say(client, telegram, hook_bot, "/status")

    assert reply.split("\n")[1:] == [
        "Runs: none active.",
        "Approvals: none pending.",
        "Spend today: no budgets set.",
        "Engine queue: empty.",
        "Workers: 0 online of 0.",
        "Errors: no open error fingerprints.",
    ]


def test_a_failing_section_is_reported_and_the_others_still_show(
    client, telegram, hook_bot, operator
):
    linked(hook_bot, operator)

    def broken(user):
        raise RuntimeError("database on fire")

    register_status_section("spend", broken, order=30)

    (reply,) = say(client, telegram, hook_bot, "/status")

    assert "Spend: could not be read (see the log)." in reply
    assert "Runs: none active." in reply
    assert "Errors: no open error fingerprints." in reply
    assert "database on fire" not in reply


def test_a_long_section_is_cut_to_a_few_lines(client, telegram, hook_bot, operator):
    linked(hook_bot, operator)
    register_status_section("noisy", lambda user: [f"line {n}" for n in range(50)], order=99)

    (reply,) = say(client, telegram, hook_bot, "/status")

    lines = reply.split("\n")
    assert lines[-6:] == ["line 0", "line 1", "line 2", "line 3", "line 4", "  … and 45 more"]


def test_status_is_refused_for_an_unlinked_account(client, telegram, hook_bot):
    assert say(client, telegram, hook_bot, "/status") == [REFUSAL]
