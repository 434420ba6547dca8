"""Migration 0003: one self-heal service account (the old engine account renamed, so
its history stays with it) and old stored findings given `needs_person`."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User

from controlplane.approvals import request_approval
from controlplane.service_accounts import service_account
from selfheal.engine import SELFHEAL_SERVICE
from selfheal.models import PlaybookExecution
from selfheal.unblock import UNBLOCK_ACTION

pytestmark = pytest.mark.django_db

migration = importlib.import_module(
    "selfheal.migrations.0003_one_service_account_and_structured_findings"
)


def inactive(username: str) -> User:
    account = User.objects.create(username=username, is_active=False)
    account.set_unusable_password()
    account.save()
    return account


def test_it_renames_the_old_engine_account_so_its_approvals_stay_attributed() -> None:
    old = inactive("selfheal-engine")
    approval = request_approval(action=UNBLOCK_ACTION, requested_by=old, reason="No gpu worker.")

    migration.one_service_account(apps, None)

    account = service_account(SELFHEAL_SERVICE)
    assert (account.pk, account.username) == (old.pk, "service-selfheal")
    approval.refresh_from_db()
    assert approval.requested_by == account
    assert not User.objects.filter(username="selfheal-engine").exists()


def test_it_leaves_both_accounts_when_both_exist_already() -> None:
    old = inactive("selfheal-engine")
    current = inactive("service-selfheal")

    migration.one_service_account(apps, None)

    assert service_account(SELFHEAL_SERVICE).pk == current.pk
    assert User.objects.get(pk=old.pk).username == "selfheal-engine"


def test_reversing_gives_an_account_that_only_unblocked_its_old_name_back() -> None:
    old = inactive("selfheal-engine")
    request_approval(action=UNBLOCK_ACTION, requested_by=old, reason="No gpu worker.")
    migration.one_service_account(apps, None)

    migration.two_service_accounts(apps, None)

    assert User.objects.get(pk=old.pk).username == "selfheal-engine"


def finding(severity: str, suggestion: str, **extra: Any) -> dict[str, Any]:
    return {
        "check": "task_queue",
        "severity": severity,
        "summary": "s",
        "suggested_action": suggestion,
        **extra,
    }


def test_old_stored_findings_keep_the_needs_a_person_verdict_they_had() -> None:
    execution = PlaybookExecution.objects.create(
        playbook="diagnose",
        findings=[
            finding("warning", "Run repair: it resets blocked tasks."),
            finding("warning", "Run repair: it resets them. Decide the pending approvals."),
            finding("critical", "Start a worker."),
            finding("ok", "Look around."),
            finding("warning", "Run repair.", needs_person=True),
        ],
    )

    migration.structured_findings(apps, None)

    execution.refresh_from_db()
    assert [f["needs_person"] for f in execution.findings] == [False, True, True, False, True]
