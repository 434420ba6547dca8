"""Fuzzing the worker API (/selfheal/api/): any body, header and query string gets an
answer under 500 in the API's JSON, and the engine's invariants hold afterwards.

Transactional: each request commits as it would on a server, so one request's
failure cannot poison the next one's transaction, and the invariants are checked on
what was committed.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from controlplane.models import AuditEvent
from selfheal import engine
from selfheal.models import Task, TaskStatus, Worker
from tests.fuzz.conftest import record_status
from tests.selfheal import make_task, make_worker

pytestmark = pytest.mark.django_db(transaction=True)

API = "/selfheal/api/"
FIELDS: dict[str, list[str]] = {
    "heartbeat": ["capabilities", "version"],
    "claim": ["kinds"],
    "offline": ["reason"],
    "extend": ["fencing_token"],
    "complete": ["fencing_token", "result"],
    "fail": ["fencing_token", "error", "retryable"],
    "release": ["fencing_token", "reason"],
}
REPORTS = {"extend", "complete", "fail", "release"}
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded"]

# -- what is sent ----------------------------------------------------------------------

nasty_text = st.sampled_from(["", " ", "\x00", "a\x00b", "é", "\ud7ff", "x" * 300, "ops", "noop"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**80)
    | st.floats()  # NaN and the infinities included
    | st.text(max_size=20)
    | nasty_text
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | nasty_text, inner, max_size=4)
    ),
    max_leaves=16,
)
names = st.lists(st.text(max_size=110) | nasty_text, max_size=110)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "capabilities": names | json_values,
    "kinds": names | json_values,
    "version": st.text(max_size=80) | nasty_text | json_values,
    "reason": st.text() | nasty_text | json_values,
    "error": st.text() | nasty_text | json_values,
    "retryable": st.booleans() | json_values,
    "fencing_token": st.integers(min_value=-1, max_value=4)
    | st.integers(min_value=2**63 - 2, max_value=2**64)
    | json_values,
    "result": json_values,
}


def nested(depth: int) -> bytes:
    return b'{"result": ' + b"[" * depth + b"]" * depth + b', "fencing_token": 1}'


def bodies(endpoint: str, fencing_tokens: list[int]) -> st.SearchStrategy[bytes]:
    """Structured bodies (the endpoint's fields, each any value; a fencing token often
    a live one) and anything else at all."""
    values = {field: FIELD_VALUES[field] for field in FIELDS[endpoint]}
    if "fencing_token" in values and fencing_tokens:
        values["fencing_token"] = st.sampled_from(fencing_tokens) | values["fencing_token"]
    structured = st.fixed_dictionaries({}, optional=values)
    return st.one_of(
        structured.map(lambda body: json.dumps(body).encode()),  # NaN goes as NaN
        structured.map(lambda body: json.dumps(body).encode()),
        json_values.map(lambda value: json.dumps(value).encode()),
        st.integers(min_value=1, max_value=20_000).map(nested),
        st.binary(max_size=40),
        st.sampled_from(
            [b"", b"null", b"1e999", b'{"fencing_token": 1e999}', b'{"result": NaN}', b"9" * 5000]
        ),
    )


def authorizations(tokens: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    def header(who: str) -> st.SearchStrategy[dict[str, str]]:
        if who in tokens:
            return st.just({"Authorization": f"Bearer {tokens[who]}"})
        if who == "garbage":
            return st.text(max_size=40).map(lambda text: {"Authorization": text})
        if who == "wrong":
            return st.text(max_size=40).map(lambda text: {"Authorization": f"Bearer cpw_{text}"})
        return st.just({})

    # Mostly a real worker's token, so that most requests reach what they carry.
    return st.sampled_from(["alpha"] * 6 + ["beta", "revoked", "garbage", "wrong", "none"]).flatmap(
        header
    )


# -- what must hold --------------------------------------------------------------------


def assert_answer_is_the_apis(endpoint: str, response: Any) -> None:
    record_status(f"POST /selfheal/api/{endpoint}", response.status_code)
    assert response.status_code < 500, response.content[:500]
    if response.status_code == 204:
        assert response.content == b""
        return
    assert response["Content-Type"] == "application/json", response.content[:200]
    answer = response.json()
    if response.status_code >= 400:
        assert set(answer) == {"error"}
        assert isinstance(answer["error"]["code"], str)
        assert isinstance(answer["error"]["message"], str)
        assert answer["error"]["message"]


def assert_engine_invariants() -> None:
    """No task in a state its transitions could not have left it in, no lease held by
    an offline worker, nothing stored that a client could not read back."""
    offline = set(Worker.objects.filter(status=Worker.Status.OFFLINE).values_list("pk", flat=True))
    for task in Task.objects.all():
        assert task.status in TaskStatus.values
        assert 0 <= task.attempts <= task.max_attempts, task
        claims = AuditEvent.objects.filter(action="task.running", object_id=str(task.pk))
        assert task.fencing_token == claims.count(), "every claim, and only a claim, fences"
        if task.status == TaskStatus.RUNNING:
            assert task.lease_worker_id is not None
            assert task.lease_expires_at is not None
            assert task.lease_worker_id not in offline, "a lease held by an offline worker"
            assert task.attempts >= 1
            assert task.fencing_token >= 1
        else:
            assert task.lease_expires_at is None
        if task.status == TaskStatus.PENDING:
            assert task.lease_worker_id is None
        if task.status == TaskStatus.COMPLETED:
            assert task.finished_at is not None
            # Readable back by any JSON client: no NaN or Infinity, no NUL.
            assert "\\u0000" not in json.dumps(task.result, allow_nan=False)
            completions = AuditEvent.objects.filter(action="task.completed", object_id=str(task.pk))
            assert completions.count() == 1
        assert "\x00" not in task.error
    for worker in Worker.objects.all():
        assert worker.status in Worker.Status.values
        capabilities = worker.capabilities
        assert isinstance(capabilities, list)
        assert len(capabilities) <= settings.WORKER_CAPABILITIES_MAX
        for name in capabilities:
            assert isinstance(name, str)
            assert "\x00" not in name
            assert len(name) <= settings.WORKER_CAPABILITY_MAX_LENGTH
        assert "\x00" not in worker.version
        assert len(worker.version) <= 50


# -- the state they run against ----------------------------------------------------------


@pytest.fixture
def tokens() -> dict[str, str]:
    """Two live workers (alpha holds a task), a revoked one, and work in the queue."""
    alpha, alpha_raw = make_worker("alpha", ["ops"])
    _, beta_raw = make_worker("beta", [])
    revoked, revoked_raw = make_worker("revoked", ["ops"])
    Worker._base_manager.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    for n in range(4):
        make_task(f"Task {n}", "noop" if n % 2 else "echo", required_capabilities=["ops"][: n % 2])
    assert engine.claim(alpha) is not None
    return {"alpha": alpha_raw, "beta": beta_raw, "revoked": revoked_raw}


@pytest.mark.parametrize("endpoint", list(FIELDS))
@given(data=st.data())
def test_any_request_to_the_worker_api_gets_a_json_answer_and_leaves_the_engine_sound(
    tokens, endpoint, data
):
    fuzz_request(tokens, endpoint, data)
    assert_engine_invariants()


@given(data=st.data())
def test_any_sequence_of_requests_leaves_the_engine_sound(tokens, data):
    """Requests to every endpoint in any order (offline then claim, complete then
    release...): the engine's invariants hold after each."""
    for endpoint in data.draw(st.lists(st.sampled_from(list(FIELDS)), min_size=1, max_size=6)):
        fuzz_request(tokens, endpoint, data)
        assert_engine_invariants()


def fuzz_request(tokens: dict[str, str], endpoint: str, data: st.DataObject) -> None:
    path = endpoint
    tasks = list(Task.objects.values_list("pk", "fencing_token"))
    if endpoint in REPORTS:
        task_id = data.draw(
            st.sampled_from([pk for pk, _ in tasks] * 4 + [-1, 0]).map(str)
            | st.integers(min_value=0, max_value=2**80).map(str)
            | st.text(min_size=1, max_size=10).map(lambda text: quote(text, safe="")),
            label="task id",
        )
        path = f"tasks/{task_id}/{endpoint}"
    query = data.draw(st.text(max_size=30), label="query string")
    # A crash is an answer too (a 500), tallied and asserted like the others.
    response = Client(raise_request_exception=False).generic(
        data.draw(st.sampled_from(["POST"] * 14 + ["GET", "PUT"]), label="method"),
        API + path + (f"?{quote(query, safe='=&')}" if query else ""),
        data=data.draw(bodies(endpoint, [token for _, token in tasks]), label="body"),
        content_type=data.draw(st.sampled_from(CONTENT_TYPES), label="content type"),
        headers=data.draw(authorizations(tokens), label="headers"),
    )
    assert_answer_is_the_apis(endpoint, response)
