"""Chat pages: the sessions list, and a session with its live run.

Everyone on staff watches; Operators and Owners start, stop and retry runs (an
Observer's POST is refused with 403: they lack `chat.operate_run`).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.apps import apps
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import escape, format_html
from django.views.decorators.http import require_GET, require_POST

from chat import tools
from chat.forms import ModeForm, NewSessionForm, RetryForm, RunForm, SessionFilterForm
from chat.live_runs import RUNS_SHOWN, running_now, runs_with_message
from chat.models import ChatSession, Message, Run, RunBudget
from chat.rendering import snapshot_of, viewer_permissions
from chat.runs import RunNotQueued, RunSwitchedOff, request_stop, retry_run, start_run
from chat.session_filters import filtered_sessions
from controlplane.tiers import (
    PermissionSnapshot,
    StaffRequest,
    permission_required_for_staff,
    staff_required,
)
from controlplane.toggle_changes import toggle_page_url
from routing.models import Mode, Policy

SESSIONS_PER_PAGE = 50


@require_GET
@staff_required
def index(request: StaffRequest) -> HttpResponse:
    """Running now (live), then the sessions, filtered and searched."""
    filters = SessionFilterForm(request.GET)
    context: dict[str, Any] = {
        "form": NewSessionForm(),
        "filters": filters,
        "running": running_now(),
        "page": None,
    }
    if not filters.is_valid():
        return render(request, "chat/index.html", context, status=400)
    sessions = filtered_sessions(filters.cleaned_data, request.user)
    context["page"] = Paginator(sessions, SESSIONS_PER_PAGE).get_page(request.GET.get("page"))
    context["filtered"] = any(filters.cleaned_data.values())
    return render(request, "chat/index.html", context)


@require_POST
@permission_required_for_staff("chat.operate_run")
def new_session(request: StaffRequest) -> HttpResponse:
    form = NewSessionForm(request.POST)
    if not form.is_valid():
        context: dict[str, Any] = {"page": None, "form": form, "running": []}
        context["filters"] = SessionFilterForm()
        return render(request, "chat/index.html", context, status=400)
    chat = ChatSession.objects.create(
        user=request.user,
        title=form.cleaned_data["title"],
        mode=form.cleaned_data["mode"],
    )
    return redirect("chat:session", chat.pk)


@require_GET
@staff_required
def session(request: StaffRequest, session_id: int) -> HttpResponse:
    chat = get_object_or_404(ChatSession.objects.select_related("user"), pk=session_id)
    runs = list(runs_of(chat)[:RUNS_SHOWN])
    run = runs[0] if runs else None
    asked = request.GET.get("run", "")
    if asked.isascii() and asked.isdigit():  # "²" is a digit to str.isdigit, not to int()
        wanted = int(asked)
        run = next((r for r in runs if r.pk == wanted), None) or get_object_or_404(
            runs_of(chat), pk=wanted
        )
    context = {
        "chat": chat,
        "runs": runs,
        "modes": modes(),
        "queue": queue_summary(),
        "message_placeholder": message_placeholder(),
        **run_panel(run, viewer_permissions(request.user)),
    }
    return render(request, "chat/session.html", context)


@require_POST
@permission_required_for_staff("chat.operate_run")
def set_mode(request: StaffRequest, session_id: int) -> HttpResponse:
    chat = get_object_or_404(ChatSession, pk=session_id)
    form = ModeForm(request.POST)
    if not form.is_valid():
        return HttpResponse("Choose one of the modes.", status=400)
    chat.mode = form.cleaned_data["mode"]
    chat.save(update_fields=["mode", "updated_at"])
    if request.htmx:  # the "remembered" badge moves to the mode chosen
        context = {"chat": chat, "modes": modes(), "oob": True}
        return render(request, "chat/session.html#mode-panel", context)
    return redirect("chat:session", chat.pk)


@require_POST
@permission_required_for_staff("chat.operate_run")
def start(request: StaffRequest, session_id: int) -> HttpResponse:
    chat = get_object_or_404(ChatSession, pk=session_id)
    form = RunForm(request.POST)
    if not form.is_valid():
        return refused(request, errors_of(form))
    try:
        run = start_run(
            chat,
            user=request.user,
            message=form.cleaned_data["message"],
            mode=form.cleaned_data["mode"],  # remembered on the session by start_run
        )
    except RunNotQueued as exc:
        return refused(request, str(exc), status=503)
    except RunSwitchedOff as exc:
        return switched_off(request, exc)
    except ValueError as exc:
        return refused(request, str(exc))
    return run_started(request, chat, run)


@require_POST
@permission_required_for_staff("chat.operate_run")
def stop(request: StaffRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    request_stop(run, user=request.user)
    if request.htmx:
        return HttpResponse(status=204)  # the run's own events show it stopping
    return redirect(f"{reverse('chat:session', args=[run.session_id])}?run={run.pk}")


@require_POST
@permission_required_for_staff("chat.operate_run")
def retry(request: StaffRequest, run_id: int) -> HttpResponse:
    """The one-click next actions: the same message again, in another mode or with a
    limit raised. A cost budget is money, so only Owners raise it."""
    previous = get_object_or_404(Run.objects.select_related("session"), pk=run_id)
    form = RetryForm(request.POST)
    if not form.is_valid():
        return refused(request, errors_of(form))
    limits = form.limits()
    if "max_cost" in limits and not request.user.has_perm("chat.raise_cost_budget"):
        raise PermissionDenied("A cost budget is money: only an Owner raises it.")
    try:
        run = retry_run(
            previous,
            user=request.user,
            mode=form.cleaned_data["mode"] or None,
            limits=limits,
        )
    except RunNotQueued as exc:
        return refused(request, str(exc), status=503)
    except RunSwitchedOff as exc:
        return switched_off(request, exc)
    except ValueError as exc:
        return refused(request, str(exc))
    return run_started(request, previous.session, run)


@require_GET
@staff_required
def queue(request: StaffRequest) -> HttpResponse:
    return render(request, "chat/partials/queue.html", {"queue": queue_summary()})


# -- what the views share --------------------------------------------------------------


def runs_of(chat: ChatSession) -> QuerySet[Run]:
    return runs_with_message(chat.runs.all())


def run_panel(run: Run | None, perms: PermissionSnapshot) -> dict[str, Any]:
    """The live part of the page: one run folded from its events, in one query."""
    if run is None:
        return {"run": None}
    events = list(run.events.only("run_id", "seq", "type", "data").order_by("seq"))
    snapshot = snapshot_of(run, events)
    messages = getattr(run, "user_messages", None)
    if messages is None:
        messages = list(run.messages.filter(role=Message.Role.USER)[:1])
    return {
        "run": run,
        "run_message": messages[0].content if messages else "",
        "last_seq": snapshot.last_seq,
        "fragments": snapshot.fragments(run.pk, perms),
        "timeline": snapshot.timeline_rows(),
    }


def run_started(request: StaffRequest, chat: ChatSession, run: Run) -> HttpResponse:
    url = f"{reverse('chat:session', args=[chat.pk])}?run={run.pk}"
    if not request.htmx:
        return redirect(url)
    run = runs_of(chat).get(pk=run.pk)
    context = {
        "chat": chat,
        "runs": list(runs_of(chat)[:RUNS_SHOWN]),
        "oob": True,
        "queue": queue_summary(),
        **run_panel(run, viewer_permissions(request.user)),
    }
    html = render_to_string("chat/session.html#run-panel", context, request) + render_to_string(
        "chat/partials/run_history.html", context, request
    )
    return HttpResponse(html, headers={"HX-Push-Url": url})


def refused(request: StaffRequest, reason: str, *, status: int = 400) -> HttpResponse:
    """A run that could not start: said next to the Run button (htmx) or as a 400 (a
    503 when the work queue is down: the request was fine, try it again later)."""
    text = escape(reason)  # a form error quotes what was typed; htmx swaps it in as HTML
    if request.htmx:
        return HttpResponse(
            text, headers={"HX-Retarget": "#run-form-errors", "HX-Reswap": "innerHTML"}
        )
    return HttpResponse(text, status=status)


def switched_off(request: StaffRequest, exc: RunSwitchedOff) -> HttpResponse:
    """A run refused because its kill switch is off: a 409 (the request was fine, the
    system's state refuses it), and next to the Run button, for someone who may switch
    it, the link that opens that toggle's switch."""
    if not request.htmx or not request.user.has_perm("controlplane.change_featuretoggle"):
        return refused(request, str(exc), status=409)
    html = format_html(
        '{} <a href="{}">Switch {} on</a>', exc, toggle_page_url(exc.toggle), exc.toggle
    )
    return HttpResponse(html, headers={"HX-Retarget": "#run-form-errors", "HX-Reswap": "innerHTML"})


def modes() -> list[dict[str, Any]]:
    """Each mode with what it is for (its routing policy) and the budgets a run gets."""
    policies = {p.mode: p for p in Policy.objects.all()}
    budgets = {b.mode: b for b in RunBudget.objects.all()}
    return [
        {
            "value": value,
            "label": label,
            "policy": policies.get(value),
            "budget": budgets.get(value),
        }
        for value, label in Mode.choices
    ]


def message_placeholder() -> str:
    """Built from the tools registered now, so it never names one that does not exist."""
    names = [tool.name for tool in tools.available_tools()]
    if not names:
        return "Ask the agent."
    return f"Ask the agent; name a tool to have it call one: {', '.join(names)}."


def queue_summary() -> dict[str, int] | None:
    """The self-heal task queue, for the why-idle panel (None without the engine)."""
    return tools.queue_summary() if apps.is_installed("selfheal") else None


def errors_of(form: forms.Form) -> str:
    return "; ".join(str(error) for errors in form.errors.values() for error in errors)
