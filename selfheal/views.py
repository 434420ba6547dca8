"""The Self-heal page (diagnose, repair, auto-heal, history with rollback) and the
Engine page (queue, workers, stuck and waiting tasks with retry and cancel).

Actions are POSTs for Operators and Owners; the pages themselves are for every tier.
Buttons inside live fragments post through htmx (the CSRF token rides in the body's
`hx-headers`), and an htmx post is answered with `HX-Redirect` so the page shows the
outcome message as a plain form post does.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from controlplane.tiers import StaffUser, Tier, tier_required
from selfheal import engine as task_engine
from selfheal.autoheal import evaluate_rules
from selfheal.dashboard import engine_context, engine_workers_context, index_context
from selfheal.models import PlaybookExecution, Task, TaskStatus
from selfheal.playbooks import RollbackRefused, rollback, run_playbook

MESSAGE_LEVELS = {"ok": messages.SUCCESS, "warning": messages.WARNING, "critical": messages.ERROR}


def _back_to(request: HttpRequest, view_name: str) -> HttpResponse:
    url = reverse(view_name)
    if request.headers.get("HX-Request") == "true":
        return HttpResponse(status=204, headers={"HX-Redirect": url})
    return redirect(url)


def _acting(request: HttpRequest) -> StaffUser:
    """The staff member behind a request the tier check let through."""
    if not isinstance(request.user, User):
        raise PermissionDenied("Sign in first.")
    return request.user


@require_GET
@tier_required(Tier.OBSERVER)
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "selfheal/index.html", index_context(request.user))


@require_GET
@tier_required(Tier.OBSERVER)
def engine(request: HttpRequest) -> HttpResponse:
    if request.GET.get("fragment") == "workers":  # the workers panel refreshes its ages
        return render(
            request, "selfheal/partials/workers.html", engine_workers_context(request.user)
        )
    return render(request, "selfheal/engine.html", engine_context(request.user))


@require_POST
@tier_required(Tier.OPERATOR)
def diagnose(request: HttpRequest) -> HttpResponse:
    execution = run_playbook("diagnose", user=_acting(request))
    messages.add_message(
        request,
        MESSAGE_LEVELS[execution.worst_severity],
        f"Diagnosis #{execution.pk}: {execution.summary}",
    )
    return _back_to(request, "selfheal:index")


@require_POST
@tier_required(Tier.OPERATOR)
def repair(request: HttpRequest) -> HttpResponse:
    dry_run = request.POST.get("dry_run") in ("1", "on", "true")
    execution = run_playbook("repair", user=_acting(request), dry_run=dry_run)
    level = messages.ERROR if execution.status == execution.Status.FAILED else messages.SUCCESS
    label = "Dry run" if dry_run else "Repair"
    messages.add_message(request, level, f"{label} #{execution.pk}: {execution.summary}")
    return _back_to(request, "selfheal:index")


@require_POST
@tier_required(Tier.OPERATOR)
def autoheal(request: HttpRequest) -> HttpResponse:
    evaluation = evaluate_rules()
    messages.info(request, f"Auto-heal: {evaluation.summary}")
    for decision in evaluation.decisions:
        messages.info(request, f"{decision.rule}: {decision.reason}")
    return _back_to(request, "selfheal:index")


@require_POST
@tier_required(Tier.OPERATOR)
def rollback_execution(request: HttpRequest, execution_id: int) -> HttpResponse:
    execution = get_object_or_404(PlaybookExecution, pk=execution_id)
    try:
        rollback(execution, user=_acting(request))
    except RollbackRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Execution #{execution.pk} rolled back.")
    return _back_to(request, "selfheal:index")


def _move_task(request: HttpRequest, task_id: int, to: str, verb: str) -> HttpResponse:
    task = get_object_or_404(Task, pk=task_id)
    try:
        task_engine.transition(
            task, to, actor=_acting(request), reason=f"{verb} by {request.user.get_username()}."
        )
    except task_engine.TransitionRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Task #{task.pk} {verb.lower()}: it is {task.status} now.")
    return _back_to(request, "selfheal:engine")


@require_POST
@tier_required(Tier.OPERATOR)
def retry_task(request: HttpRequest, task_id: int) -> HttpResponse:
    return _move_task(request, task_id, TaskStatus.PENDING, "Retried")


@require_POST
@tier_required(Tier.OPERATOR)
def cancel_task(request: HttpRequest, task_id: int) -> HttpResponse:
    return _move_task(request, task_id, TaskStatus.CANCELLED, "Cancelled")
