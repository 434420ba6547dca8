from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from controlplane.models import AuditEvent
from selfheal import stuck
from selfheal.models import Task, TaskStatus, Worker
from tests.selfheal import expire_lease, make_task, make_worker, silence, stored

pytestmark = pytest.mark.django_db

API = "/selfheal/api/"
ENDPOINTS = [
    "heartbeat",
    "claim",
    "offline",
    "tasks/1/extend",
    "tasks/1/complete",
    "tasks/1/fail",
    "tasks/1/release",
]


class WorkerClient:
    """A worker talking to the API with its token, as a real one would (CSRF enforced)."""

    def __init__(self, raw_token: str | None) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.headers = {"Authorization": f"Bearer {raw_token}"} if raw_token else {}

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(
            API + path, data=data, content_type="application/json", headers=self.headers
        )

    def claim(self) -> dict[str, Any]:
        response = self.post("claim")
        assert response.status_code == 200, response.content
        return response.json()["task"]

    def report(self, task: dict[str, Any], action: str, **body: Any) -> Any:
        return self.post(
            f"tasks/{task['id']}/{action}", {"fencing_token": task["fencing_token"], **body}
        )


@pytest.fixture
def alpha() -> WorkerClient:
    _, raw = make_worker("alpha", ["ops"])
    return WorkerClient(raw)


@pytest.fixture
def beta() -> WorkerClient:
    _, raw = make_worker("beta", ["ops"])
    return WorkerClient(raw)


def error_of(response: Any) -> str:
    return response.json()["error"]["message"]


# Tokens.


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_call_without_a_token_is_refused(path):
    response = WorkerClient(None).post(path)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer cpw_" in error_of(response)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_call_with_a_wrong_token_is_refused(path, alpha):
    wrong = alpha.headers["Authorization"][:-4] + "xxxx"
    response = WorkerClient(wrong.removeprefix("Bearer ")).post(path)
    assert response.status_code == 401
    assert error_of(response) == "This worker token is not valid."


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "cpw_abc", "Bearer sk-1"])
def test_a_malformed_authorization_header_is_refused(header):
    response = Client().post(
        API + "heartbeat", data="{}", content_type="application/json", HTTP_AUTHORIZATION=header
    )
    assert response.status_code == 401


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_call_with_a_revoked_token_is_refused_and_says_so(path):
    worker, raw = make_worker("revoked-worker")
    worker.revoked_at = timezone.now()
    worker.save()
    response = WorkerClient(raw).post(path)
    assert response.status_code == 401
    assert "revoked" in error_of(response)


def test_a_token_revoked_while_holding_a_task_cannot_complete_it():
    worker, raw = make_worker("soon-revoked")
    make_task()
    client = WorkerClient(raw)
    task = client.claim()
    worker.revoked_at = timezone.now()
    worker.save()
    assert client.report(task, "complete", result={}).status_code == 401
    assert Task.objects.get(pk=task["id"]).status == TaskStatus.RUNNING


def test_the_api_needs_no_csrf_token_but_only_accepts_post(alpha):
    assert alpha.post("heartbeat").status_code == 200  # CSRF checks enforced by the client
    response = alpha.client.get(API + "heartbeat", headers=alpha.headers)
    assert response.status_code == 405


# Bodies.


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        ("heartbeat", b"{not json", "not valid JSON"),
        ("heartbeat", b"[1, 2]", "must be a JSON object"),
        ("heartbeat", b'{"capabilities": "ops"}', "'capabilities' must be a list of strings"),
        ("heartbeat", b'{"capabilities": [1]}', "'capabilities' must be a list of strings"),
        ("heartbeat", b'{"version": 3}', "'version' must be a string"),
        ("claim", b'{"kinds": "echo"}', "'kinds' must be a list of strings"),
        ("tasks/1/extend", b"{}", "'fencing_token'"),
        ("tasks/1/complete", b'{"fencing_token": true}', "'fencing_token'"),
        ("tasks/1/complete", b'{"fencing_token": "1"}', "'fencing_token'"),
        ("tasks/1/fail", b'{"fencing_token": 1}', "'error' must be a non-empty string"),
        ("tasks/1/fail", b'{"fencing_token": 1, "error": " "}', "'error' must be a non-empty"),
        (
            "tasks/1/fail",
            b'{"fencing_token": 1, "error": "x", "retryable": "no"}',
            "'retryable' must be true or false",
        ),
        ("tasks/1/release", b'{"fencing_token": -1}', "'fencing_token'"),
    ],
)
def test_a_body_that_is_not_valid_is_refused_with_the_reason(alpha, path, raw, message):
    response = alpha.post(path, raw=raw)
    assert response.status_code == 400
    assert message in error_of(response)


# Heartbeat and claim.


def test_a_heartbeat_updates_the_worker_and_tells_it_the_intervals(alpha, settings):
    settings.HEARTBEAT_SECONDS, settings.LEASE_SECONDS = 20, 90
    response = alpha.post("heartbeat", {"capabilities": ["ops", "gpu"], "version": "ext-2"})
    assert response.status_code == 200
    assert response.json() == {
        "worker": "alpha",
        "status": "online",
        "capabilities": ["gpu", "ops"],
        "heartbeat_seconds": 20,
        "lease_seconds": 90,
    }
    worker = Worker.objects.get(name="alpha")
    assert (worker.capabilities, worker.version) == (["gpu", "ops"], "ext-2")


def test_a_claim_with_nothing_to_do_answers_204(alpha):
    make_task(required_capabilities=["gpu"])
    response = alpha.post("claim")
    assert response.status_code == 204
    assert response.content == b""


def test_a_claim_gives_the_task_its_lease_and_fencing_token(alpha, settings):
    settings.LEASE_SECONDS = 45
    created = make_task(
        "Rotate", "echo", payload={"a": 1}, priority=3, required_capabilities=["ops"]
    )
    task = alpha.claim()
    assert task["id"] == created.pk
    assert {k: task[k] for k in ("title", "kind", "payload", "priority", "status")} == {
        "title": "Rotate",
        "kind": "echo",
        "payload": {"a": 1},
        "priority": 3,
        "status": "running",
    }
    assert (task["fencing_token"], task["attempts"], task["max_attempts"]) == (1, 1, 3)
    assert task["lease_seconds"] == 45
    assert task["lease_expires_at"]
    assert task["required_capabilities"] == ["ops"]


def test_a_claim_only_takes_the_kinds_asked_for(alpha):
    make_task(kind="playbook.run")
    assert alpha.post("claim", {"kinds": ["echo"]}).status_code == 204
    assert alpha.post("claim", {"kinds": ["playbook.run"]}).status_code == 200


# Reports under the lease.


def test_extend_complete_and_the_task_is_done(alpha):
    make_task()
    task = alpha.claim()
    extended = alpha.report(task, "extend")
    assert extended.status_code == 200
    assert extended.json()["task"]["lease_expires_at"]
    done = alpha.report(task, "complete", result={"rotated": 2})
    assert done.status_code == 200
    assert done.json()["task"]["status"] == "completed"
    assert Task.objects.get(pk=task["id"]).result == {"rotated": 2}


def test_a_retryable_failure_goes_back_to_the_queue(alpha):
    make_task()
    task = alpha.claim()
    response = alpha.report(task, "fail", error="Connection reset")
    assert response.status_code == 200
    assert response.json()["task"]["status"] == "pending"


def test_a_permanent_failure_fails_the_task(alpha):
    make_task()
    task = alpha.claim()
    response = alpha.report(task, "fail", error="Bad payload", retryable=False)
    assert response.json()["task"]["status"] == "failed"
    assert Task.objects.get(pk=task["id"]).error == "Bad payload"


def test_releasing_hands_the_task_back(alpha):
    make_task()
    task = alpha.claim()
    response = alpha.report(task, "release", reason="Stopping")
    assert response.status_code == 200
    assert response.json()["task"]["status"] == "pending"
    assert response.json()["task"]["attempts"] == 0


def test_a_report_on_an_unknown_task_is_404(alpha):
    response = alpha.post("tasks/999999/complete", {"fencing_token": 1})
    assert response.status_code == 404
    assert error_of(response) == "There is no task #999999."


def test_a_report_on_another_workers_task_is_409(alpha, beta):
    make_task()
    task = alpha.claim()
    response = beta.report(task, "complete", result={})
    assert response.status_code == 409
    assert "not leased to you" in error_of(response)


def test_a_second_completion_is_409(alpha):
    make_task()
    task = alpha.claim()
    assert alpha.report(task, "complete", result={"n": 1}).status_code == 200
    response = alpha.report(task, "complete", result={"n": 2})
    assert response.status_code == 409
    assert "is completed" in error_of(response)
    assert Task.objects.get(pk=task["id"]).result == {"n": 1}


def test_a_worker_killed_mid_task_loses_it_and_its_late_completion_is_refused(alpha, beta):
    make_task("Rotate the keys")
    first = alpha.claim()
    expire_lease(Task.objects.get(pk=first["id"]))  # alpha died: its lease ran out
    stuck.detect_stuck()
    assert Task.objects.get(pk=first["id"]).status == TaskStatus.PENDING

    second = beta.claim()
    assert second["id"] == first["id"]
    assert second["fencing_token"] == first["fencing_token"] + 1
    assert beta.report(second, "complete", result={"by": "beta"}).status_code == 200

    late = alpha.report(first, "complete", result={"by": "alpha"})
    assert late.status_code == 409
    assert error_of(late) == (
        f"Task #{first['id']} was claimed again after your lease was lost: your fencing "
        "token 1 is stale (the current one is 2). Your completion was refused."
    )
    assert alpha.report(first, "extend").status_code == 409
    task = Task.objects.get(pk=first["id"])
    assert (task.status, task.result, task.attempts) == ("completed", {"by": "beta"}, 2)
    completions = AuditEvent.objects.filter(action="task.completed", object_id=str(task.pk))
    assert completions.count() == 1


def test_going_offline_hands_back_what_the_worker_holds(alpha):
    make_task()
    task = alpha.claim()
    response = alpha.post("offline", {"reason": "deploy"})
    assert response.status_code == 200
    assert response.json() == {"worker": "alpha", "status": "offline", "released": [task["id"]]}
    assert stored(Task(pk=task["id"])).status == TaskStatus.PENDING
    assert Worker.objects.get(name="alpha").status == Worker.Status.OFFLINE


# Bodies no database could store, and bodies past the limits.


def nested(depth: int, fencing_token: int = 1) -> bytes:
    result = b"[" * depth + b"]" * depth
    return b'{"result": %s, "fencing_token": %d}' % (result, fencing_token)


@pytest.mark.parametrize("path", ["heartbeat", "claim", "tasks/1/complete"])
def test_json_nested_thousands_deep_is_refused_with_a_json_400(alpha, path):
    response = alpha.post(path, raw=nested(5000))
    assert response.status_code == 400
    assert "nested too deeply" in error_of(response)


def test_a_result_nested_past_the_limit_is_refused_and_the_task_stays_leased(alpha):
    make_task()
    task = alpha.claim()
    response = alpha.post(f"tasks/{task['id']}/complete", raw=nested(200, task["fencing_token"]))
    assert response.status_code == 400
    assert "nested deeper than 64 levels" in error_of(response)
    assert stored(Task(pk=task["id"])).status == TaskStatus.RUNNING


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("heartbeat", {"version": "1.\x002"}, "'version'"),
        ("heartbeat", {"capabilities": ["ops", "g\x00pu"]}, "'capabilities[1]'"),
        ("claim", {"kinds": ["ec\x00ho"]}, "'kinds[0]'"),
        ("offline", {"reason": "bye\x00"}, "'reason'"),
    ],
)
def test_a_nul_character_in_a_worker_field_is_refused_naming_the_field(alpha, path, body, field):
    before = Worker.objects.get(name="alpha")
    response = alpha.post(path, body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert field in error_of(response)
    assert "NUL" in error_of(response)
    after = Worker.objects.get(name="alpha")
    assert (after.status, after.version, after.capabilities) == (
        before.status,
        before.version,
        before.capabilities,
    )


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("complete", {"result": {"rows": ["ok", "b\x00d"]}}, "'result.rows[1]'"),
        ("complete", {"result": {"k\x00ey": 1}}, "A key in 'result'"),
        ("complete", {"result": "\x00"}, "'result'"),
        ("fail", {"error": "boom\x00"}, "'error'"),
        ("release", {"reason": "\x00"}, "'reason'"),
    ],
)
def test_a_nul_character_in_a_report_is_refused_and_the_task_stays_leased(
    alpha, action, body, field
):
    make_task()
    task = alpha.claim()
    response = alpha.report(task, action, **body)
    assert response.status_code == 400
    assert field in error_of(response)
    held = stored(Task(pk=task["id"]))
    assert (held.status, held.fencing_token, held.error, held.result) == (
        TaskStatus.RUNNING,
        task["fencing_token"],
        "",
        None,
    )
    assert alpha.report(task, "complete", result={"ok": True}).status_code == 200


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_a_result_that_is_not_a_finite_number_is_refused_and_the_task_stays_leased(alpha, number):
    make_task()
    task = alpha.claim()
    raw = b'{"fencing_token": %d, "result": {"ratio": %s}}' % (task["fencing_token"], number)
    response = alpha.post(f"tasks/{task['id']}/complete", raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unstorable_result"
    message = error_of(response)
    assert "'result.ratio'" in message
    assert f"task #{task['id']} is still leased to you" in message
    held = stored(Task(pk=task["id"]))
    assert (held.status, held.lease_worker.name, held.result) == (TaskStatus.RUNNING, "alpha", None)
    assert alpha.report(task, "complete", result={"ratio": 0.5}).status_code == 200
    assert stored(held).result == {"ratio": 0.5}


def test_a_fencing_token_past_what_the_database_holds_is_refused(alpha):
    response = alpha.post("tasks/1/complete", {"fencing_token": 2**64})
    assert response.status_code == 400
    assert "'fencing_token'" in error_of(response)


def test_a_task_id_past_what_the_database_holds_is_not_found(alpha):
    response = alpha.post(f"tasks/{2**70}/extend", {"fencing_token": 1})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_body_over_the_upload_limit_gets_the_apis_json_413(alpha, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    response = alpha.post("heartbeat", {"version": "x" * 500})
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "payload_too_large"
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in error_of(response)


def test_another_method_gets_a_json_405(alpha):
    response = alpha.client.get(API + "claim", headers=alpha.headers)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "path", ["nothing-here", "tasks/abc/complete", "heartbeat/", "", "tasks/%0A/fail"]
)
def test_an_unknown_path_under_the_api_gets_a_json_404(alpha, path):
    response = alpha.post(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_unexpected_failure_answers_json_and_is_logged(alpha, monkeypatch, caplog):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("selfheal.engine.heartbeat", broken)
    response = alpha.post("heartbeat")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "disk on fire" not in response.content.decode()
    assert "disk on fire" in caplog.text


# Bounded lists.


@pytest.mark.parametrize("key", ["capabilities", "kinds"])
def test_a_list_of_names_over_the_count_limit_is_refused_naming_the_field(alpha, settings, key):
    settings.WORKER_CAPABILITIES_MAX = 3
    path = "heartbeat" if key == "capabilities" else "claim"
    assert alpha.post(path, {key: ["a", "b", "c"]}).status_code in (200, 204)
    response = alpha.post(path, {key: ["a", "b", "c", "d"]})
    assert response.status_code == 400
    assert error_of(response) == f"'{key}' lists 4 names; at most 3."


@pytest.mark.parametrize("key", ["capabilities", "kinds"])
def test_a_name_over_the_length_limit_is_refused_naming_the_field(alpha, settings, key):
    settings.WORKER_CAPABILITY_MAX_LENGTH = 5
    path = "heartbeat" if key == "capabilities" else "claim"
    assert alpha.post(path, {key: ["abcde"]}).status_code in (200, 204)
    response = alpha.post(path, {key: ["abcdef"]})
    assert response.status_code == 400
    assert error_of(response) == f"'{key}' holds a name over 5 characters."
    assert Worker.objects.get(name="alpha").capabilities == (
        ["abcde"] if key == "capabilities" else ["ops"]
    )


def test_the_default_limits_are_a_hundred_names_of_a_hundred_characters(alpha):
    names = [f"{n:03d}" + "c" * 97 for n in range(100)]
    assert alpha.post("heartbeat", {"capabilities": names}).status_code == 200
    assert alpha.post("heartbeat", {"capabilities": [*names, "x"]}).status_code == 400
    assert alpha.post("heartbeat", {"capabilities": ["c" * 101]}).status_code == 400


# An offline worker.


def test_a_worker_that_went_offline_cannot_claim_until_it_heartbeats(alpha):
    make_task()
    assert alpha.post("offline", {"reason": "deploy"}).status_code == 200
    refused = alpha.post("claim")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "worker_offline"
    assert "send a heartbeat" in error_of(refused)
    assert Task.objects.get().status == TaskStatus.PENDING
    assert alpha.post("heartbeat").status_code == 200
    assert alpha.post("claim").status_code == 200


def test_a_worker_the_sweep_marked_offline_cannot_claim_until_it_heartbeats(alpha):
    worker = Worker.objects.get(name="alpha")
    silence(worker, seconds=3600)
    assert stuck.detect_stuck().offline == [worker]
    make_task()
    refused = alpha.post("claim")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "worker_offline"
    assert Task.objects.get().lease_worker is None
    assert alpha.post("heartbeat").status_code == 200
    assert alpha.post("claim").status_code == 200


# The database unreachable.


@contextmanager
def _unreachable() -> Iterator[None]:
    """Point the connection where no database answers: a closed port for PostgreSQL,
    a file in a missing directory for SQLite. A real connection failure."""
    settings_dict = connection.settings_dict
    saved = {key: settings_dict.get(key) for key in ("NAME", "HOST", "PORT")}
    connection.close()
    if connection.vendor == "postgresql":
        with socket.socket() as probe:  # a port nobody listens on once it is closed
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings_dict.update(HOST="127.0.0.1", PORT=str(port))
    else:
        settings_dict["NAME"] = "/nonexistent-directory/controlplane.sqlite3"
    try:
        yield
    finally:
        connection.close()
        settings_dict.update(saved)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["heartbeat", "claim", "tasks/1/complete", "offline"])
def test_an_unreachable_database_answers_503_in_json(path):
    _, raw = make_worker("alpha", ["ops"])
    client = WorkerClient(raw)
    with _unreachable():
        response = client.post(path, {"fencing_token": 1})
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "service_unavailable",
        "message": "The database cannot be reached; try again shortly.",
    }
