"""The worker HTTP API, under /selfheal/api/: what a worker outside this process uses.

Every call is a POST with a JSON object body, authenticated with the worker's token
(`Authorization: Bearer cpw_...`), and answers JSON. Errors are
`{"error": {"code": ..., "message": ...}}`: 401 for a missing, wrong or revoked
token, 400 for a body that is not valid (or a result that cannot be stored), 404 for
an unknown task, 409 when the caller's lease is lost (a stale fencing token: the task
was given to another worker), the move is not allowed or the worker is offline (it
heartbeats, then claims), 413 for a body over DATA_UPLOAD_MAX_MEMORY_SIZE, 503 when
the database cannot be reached. The views call `selfheal.engine`, as the built-in
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
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.views.decorators.csrf import csrf_exempt

from controlplane import api_tokens
from selfheal import engine, storable
from selfheal.engine_errors import (
    EngineError,
    InvalidTask,
    LeaseLost,
    TaskNotFound,
    UnstorableResult,
    WorkerOffline,
)
from selfheal.models import Task, Worker
from selfheal.models.engine import WORKER_TOKEN_PREFIX

log = logging.getLogger(__name__)

WorkerView = Callable[..., HttpResponse]
# The largest fencing token the database holds (a PositiveBigIntegerField).
MAX_FENCING_TOKEN = 2**63 - 1


class BadRequest(Exception):
    pass


class Unauthorized(Exception):
    pass


def _error(status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="selfheal workers"'
    if status == 405:
        response["Allow"] = "POST"
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
    except RecursionError:
        raise BadRequest(
            f"The body is nested too deeply; at most {storable.MAX_DEPTH} levels."
        ) from None
    except UnreadablePostError as exc:
        raise BadRequest(f"The body could not be read: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


def worker_api(view: WorkerView) -> Callable[..., HttpResponse]:
    """Authenticate the worker, parse the body, turn engine refusals into statuses."""

    @csrf_exempt
    @wraps(view)
    def wrapped(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return _error(405, "method_not_allowed", "The worker API answers POST only.")
        try:
            worker = _authenticated_worker(request)
            return view(request, worker, _body(request), **kwargs)
        except Unauthorized as exc:
            return _error(401, "unauthorized", str(exc))
        except (BadRequest, InvalidTask) as exc:
            return _error(400, "bad_request", str(exc))
        except UnstorableResult as exc:
            return _error(400, "unstorable_result", str(exc))
        except RequestDataTooBig:
            return _error(
                413,
                "payload_too_large",
                f"The body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes "
                "(DATA_UPLOAD_MAX_MEMORY_SIZE).",
            )
        except TaskNotFound as exc:
            return _error(404, "not_found", str(exc))
        except LeaseLost as exc:
            return _error(409, "lease_lost", str(exc))
        except WorkerOffline as exc:
            return _error(409, "worker_offline", str(exc))
        except EngineError as exc:
            return _error(409, "refused", str(exc))
        except (OperationalError, InterfaceError) as exc:
            log.warning("worker API: the database is unreachable: %s", exc)
            return _error(
                503, "service_unavailable", "The database cannot be reached; try again shortly."
            )
        except Exception:
            # A worker parses every answer as JSON; Django's HTML error page would be
            # one more failure on its side.
            log.exception("worker API: %s failed", request.path)
            return _error(500, "internal_error", "The server failed; the error is logged.")

    return wrapped


@csrf_exempt
def not_found(request: HttpRequest, unknown: str = "") -> HttpResponse:
    """Any other path under the API: the API's JSON, not Django's HTML page."""
    return _error(404, "not_found", f"The worker API has no endpoint '{unknown}'.")


# -- validation ---------------------------------------------------------------------


def _names(body: dict[str, Any], key: str) -> list[str] | None:
    """A list of capability or task-kind names, bounded in count and length."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadRequest(f"'{key}' must be a list of strings.")
    most, longest = settings.WORKER_CAPABILITIES_MAX, settings.WORKER_CAPABILITY_MAX_LENGTH
    if len(value) > most:
        raise BadRequest(f"'{key}' lists {len(value)} names; at most {most}.")
    if any(len(item) > longest for item in value):
        raise BadRequest(f"'{key}' holds a name over {longest} characters.")
    return _storable(value, key)


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(
            f"'{key}' must be a non-empty string." if required else f"'{key}' must be a string."
        )
    return _storable(value, key)


def _storable[T](value: T, key: str) -> T:
    if (problem := storable.problem_in(value, key)) is not None:
        raise BadRequest(problem)
    return value


def _fencing_token(body: dict[str, Any]) -> int:
    token = body.get("fencing_token")
    # bool is an int in Python, not in JSON.
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= MAX_FENCING_TOKEN:
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
