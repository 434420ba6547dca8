"""The staff pages and their actions (Home, approvals, toggles, routing, self-heal,
health and its fingerprints), fed any query string and any form: a page or a form
error, never a 500; and what an action leaves behind is still a state the product can be in."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.approvals import request_approval
from controlplane.models import Approval, FeatureToggle
from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import Finding, Fingerprint, LogSource, Repository
from selfheal.engine import create_task
from selfheal.models import TRANSITIONS, Task
from tests.fuzz.conftest import record_status
from tests.fuzz.form_values import form_value, query_strings

PAGES = [
    "/",
    "/approvals/",
    "/toggles/",
    "/routing/",
    "/selfheal/",
    "/selfheal/engine/",
    "/health/",
    "/health/fingerprints/{fingerprint}/",
    "/health/code/",
    "/health/code/reports/",
]

ACTIONS = [
    "/approvals/{id}/decide/",
    "/toggles/",
    "/toggles/switch/",
    "/selfheal/diagnose/",
    "/selfheal/repair/",
    "/selfheal/autoheal/",
    "/selfheal/executions/{id}/rollback/",
    "/selfheal/tasks/{id}/retry/",
    "/selfheal/tasks/{id}/cancel/",
    "/selfheal/tasks/{id}/done/",
    "/health/fingerprints/{id}/resolve/",
    "/health/fingerprints/{id}/unresolve/",
    "/health/fingerprints/{id}/ignore/",
    "/health/code/findings/{id}/intended/",
    "/health/code/findings/{id}/ignored/",
    "/health/code/findings/{id}/reopen/",
    "/health/code/reports/new/",
]
# Each page and action is a test of its own: a quarter of the profile's examples each.
EACH = settings(max_examples=max(10, settings.default.max_examples // 4))

object_ids = st.one_of(st.integers(min_value=0, max_value=2**70), st.just(1))


@pytest.fixture
def owner_client(owner: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(owner)
    return client


@pytest.fixture
def world(operator: Any) -> dict[str, Any]:
    """One of each thing the actions name: a pending approval, a toggle, a task."""
    toggle = FeatureToggle.objects.create(key="reports.weekly", enabled=True)
    approval = request_approval(action="fuzz.action", requested_by=operator, reason="Fuzzing")
    task = create_task("Fuzz the engine", kind="noop")
    return {
        "toggle": toggle,
        "approval": approval,
        "task": task,
        "fingerprint": a_fingerprint(),
        "finding": a_finding(),
    }


def a_finding() -> Finding:
    repository = Repository.objects.create(name="fuzz", path="/nonexistent")
    now = timezone.now()
    return Finding.objects.create(
        repository=repository,
        check_name="ruff",
        rule="F401",
        identity="fuzz",
        severity=Finding.Severity.MEDIUM,
        message="`os` imported but unused",
        file="app.py",
        line=1,
        first_seen_at=now,
        last_seen_at=now,
    )


def a_fingerprint() -> Fingerprint:
    source = LogSource.objects.create(name="fuzz", service="fuzz", kind=LogSource.Kind.FILE)
    ingest(source, [LogRecord("Fuzzed request 1 failed", level=Level.ERROR)])
    return Fingerprint.objects.get()


def _assert_states_are_possible() -> None:
    assert set(Task.objects.values_list("status", flat=True)) <= set(TRANSITIONS)
    assert set(Approval.objects.values_list("status", flat=True)) <= set(Approval.Status.values)
    assert set(Fingerprint.objects.values_list("status", flat=True)) <= set(
        Fingerprint.Status.values
    )
    assert set(Finding.objects.values_list("status", flat=True)) <= set(Finding.Status.values)


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES)
@EACH
@given(query=query_strings)
def test_a_page_answers_any_query_string_without_a_500(
    owner_client: Client, page: str, query: dict[str, str]
) -> None:
    if "{fingerprint}" in page:
        page = page.format(fingerprint=(Fingerprint.objects.first() or a_fingerprint()).pk)
    response = owner_client.get(page, query)
    record_status(f"GET {page}", response.status_code)
    assert response.status_code < 500


@pytest.mark.django_db
@pytest.mark.parametrize("action", ACTIONS)
@EACH
@given(data=st.data())
def test_an_action_answers_any_form_and_any_id_without_a_500(
    owner_client: Client, world: dict[str, Any], action: str, data: st.DataObject
) -> None:
    known = {
        "approval": world["approval"].pk,
        "task": world["task"].pk,
        "fingerprint": world["fingerprint"].pk,
        "finding": world["finding"].pk,
    }
    object_id = data.draw(st.one_of(st.sampled_from(list(known.values())), object_ids))
    fields = data.draw(
        st.dictionaries(
            st.sampled_from(
                ["decision", "note", "key", "enabled", "reason", "dry_run", "next", "duration"]
            )
            | st.sampled_from(["more"])
            | st.text(max_size=10),
            form_value
            | st.sampled_from(["approve", "reject", "reports.weekly", "on", "1h", "24h", "7d"]),
            max_size=5,
        ),
        label="form",
    )
    response = owner_client.post(action.format(id=object_id), fields)
    record_status(f"POST {action}", response.status_code)
    assert response.status_code < 500
    _assert_states_are_possible()
