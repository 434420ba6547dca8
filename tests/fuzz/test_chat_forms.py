"""Fuzzed form posts against every chat endpoint (chat/urls.py): the sessions list and
a session (query strings), a new session, the mode selector, start a run, stop a run,
retry a run (with any budget and value). Resuming a run has no form of its own: it is
an approval's decision, so stopping runs paused for one is fuzzed through Stop.

Each request is a logged-in Operator's (or an Owner's, who alone raises a cost
budget), CSRF handled by the test client, htmx or not. Background work runs as it
would right after the request's commit, inline. Every answer is below 500, bad input
is answered with its error shown; afterwards no run is left without a worker, none is
in an impossible status, every budget is within bounds and no approval of a stopped
run can still be granted.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from chat.models import ChatSession, Message, Run, RunStatus, StopReason
from controlplane.models import Approval
from routing.models import Mode
from tests.fuzz.conftest import record_status

pytestmark = pytest.mark.django_db

# The bounds the product promises for a run's budgets (the issue's, written out here
# so the fuzz test also runs against code from before they existed).
BUDGET_BOUNDS = {
    "max_steps": (1, 1000),
    "max_wall_clock_seconds": (1, 3600),
    "max_cost": (Decimal("0.000001"), Decimal("1000")),
    "max_retries_per_fingerprint": (1, 100),
}
PAUSED_STATUSES = {RunStatus.STOPPED, RunStatus.WAITING_APPROVAL}

NASTY = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "1e20",
        "1e30",
        "1e12",
        "1e999999",
        "-1",
        "0",
        "1",
        "1.5",
        "NaN",
        "sNaN",
        "Infinity",
        "-Infinity",
        "0.0000001",
        "9" * 40,
        "x" * 20_001,
        "<script>alert(1)</script>",
        "Show the queue_summary",
        "create_task: rotate the keys",
        "todays_spend please",
        "http_get http://127.0.0.1:1/",
        *Mode.values,
        *BUDGET_BOUNDS,
    ]
)
TEXT = st.one_of(
    NASTY,
    st.text(max_size=40),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
)
MODE = st.one_of(st.sampled_from(Mode.values), TEXT)
BUDGET = st.one_of(st.sampled_from([*BUDGET_BOUNDS, ""]), st.sampled_from([*BUDGET_BOUNDS]), TEXT)
# Budget values: mostly numbers near and far past the bounds, as the issue's.
NUMBER = st.sampled_from(
    [
        *("1e20", "1e30", "1e12", "1e999999", "1001", "3601", "101", "1000", "3600", "100"),
        *("20", "1", "0", "-1", "1.5", "0.000001", "0.0000001", "NaN", "Infinity", "9" * 40),
    ]
)
VALUE = st.one_of(NUMBER, NUMBER, TEXT)


def form(fields: dict[str, Any]) -> st.SearchStrategy[dict[str, str]]:
    """Any subset of the form's fields, with any values, and some fields it does not have."""
    known = st.fixed_dictionaries({}, optional=fields)
    extra = st.dictionaries(st.text(min_size=1, max_size=12), TEXT, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, extra)


@pytest.fixture
def clients(operator: Any, owner: Any) -> dict[str, Client]:
    people = {"operator": operator, "owner": owner}
    made = {}
    for name, user in people.items():
        client = Client()  # enforce_csrf_checks is off: the test client handles CSRF
        client.raise_request_exception = False  # a crash is counted as its 500
        client.force_login(user)
        made[name] = client
    return made


@pytest.fixture
def chat(operator: Any) -> ChatSession:
    """A session with a finished run to retry and stop."""
    session = ChatSession.objects.create(user=operator, title="Fuzz")
    run = Run.objects.create(
        session=session,
        started_by=operator,
        mode="normal",
        status=RunStatus.STOPPED,
        stop_reason=StopReason.MAX_STEPS,
        finished_at=timezone.now(),
        max_steps=10,
        max_wall_clock_seconds=300,
        max_cost=Decimal("0.50"),
    )
    Message.objects.create(session=session, run=run, role=Message.Role.USER, content="Again")
    return session


def send(
    client: Client,
    capture: Any,
    endpoint: str,
    url: str,
    data: dict[str, str] | None = None,
    *,
    htmx: bool = False,
) -> Any:
    """POST (or GET without data) and run the background work the request queued, as
    it runs after a real request's commit. Background work that crashes is the
    request's 500 (in the embedded mode it is)."""
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    try:
        with capture(execute=True):
            if data is None:
                response = client.get(url, **headers)
            else:
                response = client.post(url, data, **headers)
    except Exception:
        record_status(endpoint, 500)
        raise
    record_status(endpoint, response.status_code)
    assert response.status_code < 500, response.content[:500]
    if response.status_code == 400 or "HX-Retarget" in response.headers:
        assert response.content.strip(), "a refusal must say what is wrong"
    return response


def some_run(chat: ChatSession, pick: int) -> int:
    ids = list(Run.objects.order_by("id").values_list("pk", flat=True))
    return ids[pick % len(ids)] if pick >= 0 and ids else 10**9 + abs(pick)


def assert_invariants() -> None:
    """No run without a worker, none in an impossible status, budgets within bounds,
    no approval of a run that stopped still open."""
    for run in Run.objects.all():
        assert run.status in RunStatus.values
        assert run.status in PAUSED_STATUSES, f"run {run.pk} left {run.status} with no worker"
        assert not run.stop_reason or run.stop_reason in StopReason.values
        if run.status == RunStatus.STOPPED:
            assert run.stop_reason, f"run {run.pk} stopped without a reason"
            assert run.finished_at is not None
        if run.status == RunStatus.WAITING_APPROVAL:
            assert run.pending_approval is not None
            assert run.pending_approval.status == Approval.Status.PENDING
        for name, (low, high) in BUDGET_BOUNDS.items():
            assert low <= getattr(run, name) <= high, f"run {run.pk} {name} out of bounds"
        assert run.steps <= run.max_steps
    for approval in Approval.objects.filter(status=Approval.Status.PENDING):
        run_id = (approval.proposal or {}).get("run_id")
        if run_id:
            status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
            assert status == RunStatus.WAITING_APPROVAL, f"approval {approval.pk} still open"


@given(data=form({"title": TEXT, "mode": MODE}), htmx=st.booleans())
def test_new_session(clients, chat, django_capture_on_commit_callbacks, data, htmx) -> None:
    response = send(
        clients["operator"],
        django_capture_on_commit_callbacks,
        "POST /chat/new/",
        reverse("chat:new_session"),
        data,
        htmx=htmx,
    )
    if response.status_code == 400:
        assert b"errorlist" in response.content
    assert_invariants()


@given(data=form({"mode": MODE}), htmx=st.booleans())
def test_set_mode(clients, chat, django_capture_on_commit_callbacks, data, htmx) -> None:
    send(
        clients["operator"],
        django_capture_on_commit_callbacks,
        "POST /chat/<id>/mode/",
        reverse("chat:mode", args=[chat.pk]),
        data,
        htmx=htmx,
    )
    assert_invariants()


@given(data=form({"message": TEXT, "mode": MODE}), htmx=st.booleans())
def test_start_run(clients, chat, django_capture_on_commit_callbacks, data, htmx) -> None:
    send(
        clients["operator"],
        django_capture_on_commit_callbacks,
        "POST /chat/<id>/run/",
        reverse("chat:run", args=[chat.pk]),
        data,
        htmx=htmx,
    )
    assert_invariants()


@given(
    data=st.one_of(
        form({"mode": MODE, "budget": BUDGET, "value": VALUE}),
        # Half the examples raise a real budget, to probe its bounds.
        st.fixed_dictionaries(
            {"budget": st.sampled_from([*BUDGET_BOUNDS]), "value": NUMBER},
            optional={"mode": st.sampled_from(Mode.values)},
        ),
    ),
    person=st.sampled_from(["operator", "owner"]),
    pick=st.integers(min_value=-2, max_value=50),
    htmx=st.booleans(),
)
def test_retry_run(
    clients, chat, django_capture_on_commit_callbacks, data, person, pick, htmx
) -> None:
    send(
        clients[person],
        django_capture_on_commit_callbacks,
        "POST /chat/runs/<id>/retry/",
        reverse("chat:retry", args=[some_run(chat, pick)]),
        data,
        htmx=htmx,
    )
    assert_invariants()


@given(
    data=form({"message": TEXT}),
    pick=st.integers(min_value=-2, max_value=50),
    pause_first=st.booleans(),
    htmx=st.booleans(),
)
def test_stop_run(
    clients, chat, django_capture_on_commit_callbacks, data, pick, pause_first, htmx
) -> None:
    if pause_first:  # a run paused for an approval (a risky tool), to be stopped
        send(
            clients["operator"],
            django_capture_on_commit_callbacks,
            "POST /chat/<id>/run/",
            reverse("chat:run", args=[chat.pk]),
            {"message": "create_task: rotate the keys", "mode": "normal"},
        )
    target = some_run(chat, pick) if pick >= 0 else 10**9
    if pause_first:
        target = Run.objects.order_by("-id").values_list("pk", flat=True).first() or target
    send(
        clients["operator"],
        django_capture_on_commit_callbacks,
        "POST /chat/runs/<id>/stop/",
        reverse("chat:stop", args=[target]),
        data,
        htmx=htmx,
    )
    assert_invariants()


@given(
    run=st.one_of(TEXT, st.integers().map(str)),
    page=st.one_of(TEXT, st.integers().map(str)),
    htmx=st.booleans(),
)
def test_chat_pages(clients, chat, django_capture_on_commit_callbacks, run, page, htmx) -> None:
    send(
        clients["operator"],
        django_capture_on_commit_callbacks,
        "GET /chat/<id>/?run=",
        f"{reverse('chat:session', args=[chat.pk])}?{urlencode({'run': run})}",
        htmx=htmx,
    )
    send(
        clients["operator"],
        django_capture_on_commit_callbacks,
        "GET /chat/?page=",
        f"{reverse('chat:index')}?{urlencode({'page': page})}",
        htmx=htmx,
    )
    assert_invariants()


@given(
    data=form({"q": TEXT, "status": TEXT, "mode": MODE, "owner": TEXT, "page": TEXT}),
    htmx=st.booleans(),
)
def test_chat_index_filters(clients, chat, django_capture_on_commit_callbacks, data, htmx) -> None:
    send(
        clients["operator"],
        django_capture_on_commit_callbacks,
        "GET /chat/?q=&status=&mode=&owner=",
        f"{reverse('chat:index')}?{urlencode(data)}",
        htmx=htmx,
    )
