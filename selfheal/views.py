"""The Self-heal page (diagnose, repair, auto-heal, history with rollback) and the
Engine page (queue, workers, stuck and waiting tasks with retry and cancel).

Actions are POSTs for Operators and Owners; the pages themselves are for every tier.
Buttons inside live fragments post through htmx (the CSRF token rides in the body's
`hx-headers`), and an htmx post is answered with `HX-Redirect` so the page shows the
outcome message as a plain form post does.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from controlplane.tiers import StaffRequest, permission_required_for_staff, staff_required
from selfheal import engine as task_engine
from selfheal.autoheal import evaluate_rules
from selfheal.dashboard import engine_context, engine_workers_context, index_context
from selfheal.engine_errors import TransitionRefused
from selfheal.models import PlaybookExecution, Task, TaskStatus
from selfheal.playbooks import RollbackRefused, rollback, run_playbook
from selfheal.task_list import PAGE_PARAMETER, task_list_context, throughput_context

MESSAGE_LEVELS = {"ok": messages.SUCCESS, "warning": messages.WARNING, "critical": messages.ERROR}


def _back_to(request: StaffRequest, view_name: str) -> HttpResponse:
    url = reverse(view_name)
    if request.htmx:
        return HttpResponse(status=204, headers={"HX-Redirect": url})
    return redirect(url)


@require_GET
@staff_required
def index(request: StaffRequest) -> HttpResponse:
    return render(
        request, "selfheal/index.html", {**index_context(), "repair_question": REPAIR_QUESTION}
    )


@require_GET
@staff_required
def engine(request: StaffRequest) -> HttpResponse:
    if request.GET.get("fragment") == "workers":  # the workers panel refreshes its ages
        return render(request, "selfheal/partials/workers.html", engine_workers_context())
    tasks = task_list_context(request.GET)
    # The socket's URL carries the filter and page, so live updates show the same list.
    socket_query = "&".join(part for part in (tasks["filter_query"], _page_query(request)) if part)
    context = {**engine_context(), **tasks, **throughput_context(), "socket_query": socket_query}
    status = 400 if tasks["task_filter"].errors else 200
    return render(request, "selfheal/engine.html", context, status=status)


def _page_query(request: StaffRequest) -> str:
    page = request.GET.get(PAGE_PARAMETER, "")
    return urlencode({PAGE_PARAMETER: page}) if page.isdigit() else ""


@require_POST
@permission_required_for_staff("selfheal.run_playbook")
def diagnose(request: StaffRequest) -> HttpResponse:
    execution = run_playbook("diagnose", user=request.user)
    messages.add_message(
        request,
        MESSAGE_LEVELS[execution.worst_severity],
        f"Diagnosis #{execution.pk}: {execution.summary}",
    )
    return _back_to(request, "selfheal:index")


# Asked before a repair (htmx's confirm, or the confirmation page without JavaScript),
# as a rollback is: a repair changes tasks.
REPAIR_QUESTION = (
    "Run the repair playbook? Unless Dry run is ticked it resets blocked and stuck tasks "
    "and opens fix tasks, within its caps (over a cap it asks for approval). Rollback "
    "undoes what it changed."
)


@require_http_methods(["GET", "POST"])
@permission_required_for_staff("selfheal.run_playbook")
def repair(request: StaffRequest) -> HttpResponse:
    if request.method == "GET":  # the form without JavaScript: ask first
        dry_run = request.GET.get("dry_run") in ("1", "on", "true")
        return render(request, "selfheal/repair_confirm.html", {"dry_run": dry_run})
    dry_run = request.POST.get("dry_run") in ("1", "on", "true")
    execution = run_playbook("repair", user=request.user, dry_run=dry_run)
    level = messages.ERROR if execution.status == execution.Status.FAILED else messages.SUCCESS
    label = "Dry run" if dry_run else "Repair"
    messages.add_message(request, level, f"{label} #{execution.pk}: {execution.summary}")
    return _back_to(request, "selfheal:index")


@require_POST
@permission_required_for_staff("selfheal.run_playbook")
def autoheal(request: StaffRequest) -> HttpResponse:
    evaluation = evaluate_rules()
    messages.info(request, f"Auto-heal: {evaluation.summary}")
    for decision in evaluation.decisions:
        messages.info(request, f"{decision.rule}: {decision.reason}")
    return _back_to(request, "selfheal:index")


@require_http_methods(["GET", "POST"])
@permission_required_for_staff("selfheal.rollback_execution")
def rollback_execution(request: StaffRequest, execution_id: int) -> HttpResponse:
    execution = get_object_or_404(PlaybookExecution, pk=execution_id)
    if request.method == "GET":  # the form without JavaScript: ask first
        return render(request, "selfheal/rollback_confirm.html", {"execution": execution})
    try:
        rollback(execution, user=request.user)
    except RollbackRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Execution #{execution.pk} rolled back.")
    return _back_to(request, "selfheal:index")


def _move_task(request: StaffRequest, task_id: int, to: str, verb: str) -> HttpResponse:
    task = get_object_or_404(Task, pk=task_id)
    try:
        task_engine.transition(
            task, to, actor=request.user, reason=f"{verb} by {request.user.get_username()}."
        )
    except TransitionRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Task #{task.pk} {verb.lower()}: it is {task.status} now.")
    return _back_to(request, "selfheal:engine")


@require_POST
@permission_required_for_staff("selfheal.operate_task")
def retry_task(request: StaffRequest, task_id: int) -> HttpResponse:
    return _move_task(request, task_id, TaskStatus.PENDING, "Retried")


@require_POST
@permission_required_for_staff("selfheal.operate_task")
def done_task(request: StaffRequest, task_id: int) -> HttpResponse:
    """A person's to-do (a chat request, a fix to make) is done: the person says so."""
    return _move_task(request, task_id, TaskStatus.COMPLETED, "Marked done")


@require_POST
@permission_required_for_staff("selfheal.operate_task")
def cancel_task(request: StaffRequest, task_id: int) -> HttpResponse:
    return _move_task(request, task_id, TaskStatus.CANCELLED, "Cancelled")
