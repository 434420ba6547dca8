from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.models import AuditEvent
from selfheal import stuck
from selfheal.models import Task, TaskStatus, Worker
from tests.selfheal import expire_lease, make_task, make_worker, stored

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
