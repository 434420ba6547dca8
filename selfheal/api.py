"""The worker HTTP API, under /selfheal/api/: what a worker outside this process uses.

Every call is a POST with a JSON object body, authenticated with the worker's token
(`Authorization: Bearer cpw_...`), and answers JSON. Errors are
`{"error": {"code": ..., "message": ...}}`: 401 for a missing, wrong or revoked
token, 400 for a body that is not valid, 404 for an unknown task, 409 when the
caller's lease is lost (a stale fencing token: the task was given to another worker)
or the move is not allowed. The views call `selfheal.engine`, as the built-in
worker does in-process.

    POST heartbeat                {"capabilities": [...], "version": "..."}   (both optional)
    POST claim                    {"kinds": [...]}  (optional) -> 200 {"task": ...} | 204
    POST tasks/<id>/extend        {"fencing_token": n}
    POST tasks/<id>/complete      {"fencing_token": n, "result": <any JSON>}
    POST tasks/<id>/fail          {"fencing_token": n, "error": "...", "retryable": true}
    POST tasks/<id>/release       {"fencing_token": n, "reason": "..."}   (hand back)
    POST offline                  {"reason": "..."}  (stopping: offline, leases released)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from controlplane import api_tokens
from selfheal import engine
from selfheal.engine_errors import EngineError, InvalidTask, LeaseLost, TaskNotFound
from selfheal.models import Task, Worker
from selfheal.models.engine import WORKER_TOKEN_PREFIX

WorkerView = Callable[..., HttpResponse]


class BadRequest(Exception):
    pass


class Unauthorized(Exception):
    pass


def _error(status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="selfheal workers"'
    return response


def _authenticated_worker(request: HttpRequest) -> Worker:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header.removeprefix("Bearer ").strip():
        raise Unauthorized(
            f"Send the worker's token: 'Authorization: Bearer {WORKER_TOKEN_PREFIX}...'."
        )
    raw = header.removeprefix("Bearer ").strip()
    worker = Worker.authenticate(raw)
    if worker is not None:
        return worker
    if _revoked(raw):
        raise Unauthorized("This worker's token was revoked; register the worker again.")
    raise Unauthorized("This worker token is not valid.")


def _revoked(raw: str) -> bool:
    """Told apart from a wrong token only for the holder of the real secret."""
    lookup = api_tokens.lookup_of(raw, WORKER_TOKEN_PREFIX)
    if lookup is None:
        return False
    worker = Worker.objects.filter(token_lookup=lookup, revoked_at__isnull=False).first()
    return worker is not None and api_tokens.matches(worker.token_hash, raw)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


def worker_api(view: WorkerView) -> Callable[..., HttpResponse]:
    """Authenticate the worker, parse the body, turn engine refusals into statuses."""

    @csrf_exempt
    @require_POST
    @wraps(view)
    def wrapped(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        try:
            worker = _authenticated_worker(request)
            return view(request, worker, _body(request), **kwargs)
        except Unauthorized as exc:
            return _error(401, "unauthorized", str(exc))
        except (BadRequest, InvalidTask) as exc:
            return _error(400, "bad_request", str(exc))
        except TaskNotFound as exc:
            return _error(404, "not_found", str(exc))
        except LeaseLost as exc:
            return _error(409, "lease_lost", str(exc))
        except EngineError as exc:
            return _error(409, "refused", str(exc))

    return wrapped


# -- validation ---------------------------------------------------------------------


def _names(body: dict[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"'{key}' must be a list of strings.")
    return value


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(
            f"'{key}' must be a non-empty string." if required else f"'{key}' must be a string."
        )
    return value


def _fencing_token(body: dict[str, Any]) -> int:
    token = body.get("fencing_token")
    # bool is an int in Python, not in JSON.
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise BadRequest("'fencing_token' (the one your claim returned) must be an integer.")
    return token


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be true or false.")
    return value


def _lease_body(task: Task) -> dict[str, Any]:
    return {
        "id": task.pk,
        "status": task.status,
        "fencing_token": task.fencing_token,
        "attempts": task.attempts,
        "max_attempts": task.max_attempts,
        "lease_expires_at": task.lease_expires_at.isoformat() if task.lease_expires_at else None,
        "lease_seconds": settings.LEASE_SECONDS,
    }


def _task_body(task: Task) -> dict[str, Any]:
    return {
        **_lease_body(task),
        "title": task.title,
        "kind": task.kind,
        "payload": task.payload,
        "priority": task.priority,
        "required_capabilities": task.required_capabilities,
    }


# -- views --------------------------------------------------------------------------


@worker_api
def heartbeat(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> HttpResponse:
    worker = engine.heartbeat(
        worker, capabilities=_names(body, "capabilities"), version=_text(body, "version")
    )
    return JsonResponse(
        {
            "worker": worker.name,
            "status": worker.status,
            "capabilities": worker.capabilities,
            "heartbeat_seconds": settings.HEARTBEAT_SECONDS,
            "lease_seconds": settings.LEASE_SECONDS,
        }
    )


@worker_api
def claim(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> HttpResponse:
    task = engine.claim(worker, kinds=_names(body, "kinds"))
    if task is None:
        return HttpResponse(status=204)
    return JsonResponse({"task": _task_body(task)})


@worker_api
def extend(
    request: HttpRequest, worker: Worker, body: dict[str, Any], task_id: int
) -> HttpResponse:
    task = engine.extend_lease(worker, task_id, _fencing_token(body))
    return JsonResponse({"task": _lease_body(task)})


@worker_api
def complete(
    request: HttpRequest, worker: Worker, body: dict[str, Any], task_id: int
) -> HttpResponse:
    task = engine.complete(worker, task_id, _fencing_token(body), body.get("result"))
    return JsonResponse({"task": _lease_body(task)})


@worker_api
def fail(request: HttpRequest, worker: Worker, body: dict[str, Any], task_id: int) -> HttpResponse:
    token = _fencing_token(body)
    error = _text(body, "error", required=True) or ""
    task = engine.fail(worker, task_id, token, error, retryable=_flag(body, "retryable", True))
    return JsonResponse({"task": _lease_body(task)})


@worker_api
def release(
    request: HttpRequest, worker: Worker, body: dict[str, Any], task_id: int
) -> HttpResponse:
    task = engine.release(worker, task_id, _fencing_token(body), _text(body, "reason") or "")
    return JsonResponse({"task": _lease_body(task)})


@worker_api
def offline(request: HttpRequest, worker: Worker, body: dict[str, Any]) -> HttpResponse:
    reason = _text(body, "reason") or "the worker is stopping."
    released = engine.go_offline(worker, reason)
    return JsonResponse(
        {"worker": worker.name, "status": worker.status, "released": [t.pk for t in released]}
    )
