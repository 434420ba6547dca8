"""The one place that maps a run event to its template fragment and context.

The session page folds a run's events into the same fragments that the websocket
consumer sends live (as out-of-band htmx swaps), so the page on load and the page
kept up to date cannot drift. Every context here is built from an event's own
`data` (and plain values), never from the database, so the consumer renders
without leaving the event loop.

What each fragment carries (the ids the page expects):

- `status`: `#run-status` (replaced)
- `token`: text appended to `#run-reply`
- `model_call`: a `#model-call-<call_id>` row appended to `#timeline` (started), then
  its `#model-call-<call_id>-outcome` (replaced, finished)
- `tool_start`: a `#tool-<execution_id>` row appended to `#timeline`
- `tool_result`: `#tool-<execution_id>-outcome` and `#tool-<execution_id>-result` (replaced)
- `budget`: `#run-budget` (replaced)
- `guardrails`: `#run-guardrails` (replaced)
- `approval`: `#run-approval` (replaced)
- `stop_reason`: `#stop-reason` (replaced) and a fresh `#task-queue` (loaded by htmx)
- `error`: `#last-error` (replaced)

and every live message ends with `#run-last-seq`, which the browser sends back as
`?after=` when it reconnects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.template.loader import render_to_string
from django.urls import reverse

from chat.budget_tracker import BudgetTracker
from chat.guardrails import Guardrails
from chat.models import (
    ACTIVE_STATUSES,
    Run,
    RunStatus,
    StopReason,
    StreamEvent,
    status_label,
    stop_reason_label,
)
from chat.stop_reasons import explain
from chat.timeline import model_call_row, pretty_json, tool_row
from controlplane.money import usd
from controlplane.tiers import PermissionSnapshot, StaffUser
from controlplane.toggle_changes import toggle_page_url
from routing.budgets import meter_state
from routing.models import Mode

FRAGMENTS: dict[str, str] = {
    StreamEvent.Type.STATUS: "chat/partials/status.html",
    StreamEvent.Type.TOKEN: "chat/partials/reply.html",
    StreamEvent.Type.TOOL_START: "chat/partials/tool_start.html",
    StreamEvent.Type.TOOL_RESULT: "chat/partials/tool_result.html",
    StreamEvent.Type.BUDGET: "chat/partials/budget.html",
    StreamEvent.Type.GUARDRAILS: "chat/partials/guardrails.html",
    StreamEvent.Type.APPROVAL: "chat/partials/approval.html",
    StreamEvent.Type.STOP_REASON: "chat/partials/stop_reason.html",
    StreamEvent.Type.ERROR: "chat/partials/last_error.html",
    StreamEvent.Type.MODEL_CALL: "chat/partials/model_call.html",
}
LAST_SEQ_FRAGMENT = "chat/partials/last_seq.html"

# The budget tracker names each meter's state; the page styles it by level.
METER_STATES = {"green": "ok", "amber": "warning", "red": "critical"}

STATUS_DETAILS: dict[str, str] = {
    RunStatus.IDLE: "Nothing is running.",
    RunStatus.THINKING: "Asking the model what to do next.",
    RunStatus.STREAMING: "The model is answering.",
    RunStatus.TOOL_RUNNING: "A tool is running.",
    RunStatus.WAITING_APPROVAL: "Paused until a person approves the next step.",
    RunStatus.STOPPING: "Stopping at the next safe point.",
    RunStatus.STOPPED: "The run has ended.",
}
STOPPED_STATUSES = (RunStatus.IDLE, RunStatus.STOPPED)

# Each counter in words that read as healthy while it is far from its limit: what it
# counts, and what it says while nothing is wrong.
GUARDRAILS = (
    ("loop", "Identical calls in a row", "no repeated call"),
    ("no_progress", "Identical steps in a row", "making progress"),
    ("repeated_failure", "Same failure again", "no repeated failure"),
)
# A counter at 1 is healthy for loop and no_progress (a call or a step seen once);
# they warn from this share of their limit.
GUARDRAIL_WARN_PERCENT = 60


# -- contexts, one per event type ------------------------------------------------------


def status_context(data: dict[str, Any]) -> dict[str, Any]:
    status = str(data.get("status") or RunStatus.IDLE)
    return {
        "status": status,
        "label": status_label(status),
        # The page ticks the wall clock from here (chat.js); rendered_at lets it allow
        # for a browser clock that differs from the server's.
        "clock_since": data.get("clock_since"),
        "rendered_at": round(time.time(), 3),
        "detail": data.get("detail") or STATUS_DETAILS.get(status, ""),
        "active": status in ACTIVE_STATUSES,
        "running": status not in STOPPED_STATUSES,
    }


def reply_context(data: dict[str, Any]) -> dict[str, Any]:
    """Pieces of the reply, each `{step, text}`: a piece with a step starts that step's
    text, set apart from the step before."""
    return {"pieces": [{"step": data.get("step"), "text": data.get("text", "")}]}


def tool_start_context(data: dict[str, Any]) -> dict[str, Any]:
    return {"tool": tool_row(data)}


def tool_result_context(data: dict[str, Any]) -> dict[str, Any]:
    return {"tool": tool_row(data)}


def model_call_context(data: dict[str, Any]) -> dict[str, Any]:
    return {"call": model_call_row(data), "phase": data.get("phase", "")}


def budget_context(data: dict[str, Any]) -> dict[str, Any]:
    retries = data.get("retries") or {}
    return {
        "meters": [
            meter("steps", "Steps", data.get("steps") or {}, unit="steps"),
            meter("wall_clock", "Wall clock", data.get("wall_clock") or {}, unit="s"),
            meter("cost", "Cost", data.get("cost") or {}, unit="$"),
        ],
        "retries": sorted(
            ({"fingerprint": str(fp), "count": count} for fp, count in retries.items() if count),
            key=lambda row: (-row["count"], row["fingerprint"]),
        ),
        "retry_limit": data.get("retry_limit"),
    }


def meter(key: str, label: str, values: dict[str, Any], *, unit: str) -> dict[str, Any]:
    used, limit = number(values.get("used")), number(values.get("limit"))
    percent = number(values.get("percent"))
    if percent is None and used is not None and limit:
        percent = used * 100 / limit
    shown = max(Decimal(0), min(Decimal(100), percent or Decimal(0)))
    return {
        "key": key,
        "label": label,
        "used": format_amount(used, unit),
        "limit": format_amount(limit, unit),
        "limit_value": f"{limit:f}" if limit is not None else "",
        "percent": int(shown),
        "level": METER_STATES.get(str(values.get("state")), "") or level(percent),
    }


def guardrails_context(data: dict[str, Any]) -> dict[str, Any]:
    counters = []
    for key, label, healthy in GUARDRAILS:
        values = data.get(key) or {}
        count, threshold = number(values.get("count")) or 0, number(values.get("threshold"))
        percent = count * 100 / threshold if threshold else None
        near = percent is not None and percent >= GUARDRAIL_WARN_PERCENT and count > 1
        counters.append(
            {
                "key": key,
                "label": label,
                "healthy": healthy,
                "count": int(count),
                "threshold": int(threshold) if threshold is not None else None,
                # Muted while healthy; warned only as it nears the count that stops the run.
                "level": level(percent) if near else "ok",
            }
        )
    return {"counters": counters, "all_healthy": all(c["level"] == "ok" for c in counters)}


def approval_context(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "approval": {
            "id": data.get("approval_id"),
            "tool": data.get("tool", ""),
            "arguments": pretty_json(data.get("arguments")) if "arguments" in data else "",
            "reason": data.get("reason", ""),
        }
        if data
        else None
    }


def stop_reason_context(data: dict[str, Any], run_id: int = 0) -> dict[str, Any]:
    reason = str(data.get("reason") or "")
    retry_modes = [
        {"label": label, "post": retry_url(run_id), "values": json.dumps({"mode": mode})}
        for mode, label in Mode.choices
    ]
    if not reason:
        return {"stop": None, "retry_modes": []}
    label = data.get("label") or stop_reason_label(reason)
    action = data.get("next_action") or None
    return {
        "stop": {
            "reason": reason,
            "label": label,
            "suggestion": data.get("suggestion", ""),
            "next_action": next_action(action, run_id) if action else None,
        },
        "retry_modes": retry_modes if reason != StopReason.AWAITING_APPROVAL else [],
    }


def next_action(action: dict[str, Any], run_id: int) -> dict[str, Any]:
    """The stop reason's next action (see chat.stop_reasons) as one click: a link, or a
    button that posts, with the tier it needs."""
    kind = str(action.get("kind") or "")
    shown: dict[str, Any] = {
        "kind": kind,
        "label": action.get("label") or kind.replace("_", " "),
        "needs": str(action.get("tier") or ""),
    }
    if kind == "approve":
        shown["href"] = (
            f"{action.get('url') or reverse('approvals')}#approval-{action.get('approval_id')}"
        )
    elif kind == "follow_up":
        shown["href"] = "#id_message"
        shown["needs"] = "operator"
    elif kind in ("retry", "retry_other_mode", "raise_budget"):
        values = {"mode": str(action.get("mode") or "")}
        if kind == "raise_budget":
            values |= {"budget": str(action.get("budget")), "value": str(action.get("value"))}
            shown["admin_href"] = budget_admin_url(str(action.get("mode") or ""))
        shown["post"] = retry_url(run_id)
        shown["values"] = json.dumps(values)
        shown["needs"] = shown["needs"] or "operator"
    elif kind == "enable_toggle" and action.get("toggle"):
        # Built here, not taken from the event: events stored before the Toggles page
        # had switches carry a bare "/toggles/" and lead to the switch too.
        shown["href"] = toggle_page_url(str(action["toggle"]))
    elif action.get("url"):
        shown["href"] = str(action["url"])
    shown["permission"] = action_permission(kind, shown["needs"])
    return shown


# What an Owner's next action asks, by kind: the permission the page it leads to checks.
OWNER_ACTION_PERMISSIONS = {
    "raise_budget": "chat.raise_cost_budget",
    "enable_toggle": "controlplane.change_featuretoggle",
}


def action_permission(kind: str, needs: str) -> str:
    """The permission a next action asks of the viewer. The event stores the tier
    that may take it (events are never rewritten); the page asks the permission."""
    if not needs:
        return ""
    if needs == "operator":
        return "chat.operate_run"
    return OWNER_ACTION_PERMISSIONS.get(kind, "chat.raise_cost_budget")


def retry_url(run_id: int) -> str:
    return reverse("chat:retry", args=[run_id]) if run_id else ""


def budget_admin_url(mode: str) -> str:
    """Where an Owner raises a mode's run budget for every later run: that mode's own
    `RunBudget` in the admin (without a query: the admin finds the row)."""
    if mode in Mode.values:
        return reverse("admin:chat_runbudget_mode", args=[mode])
    return reverse("admin:chat_runbudget_changelist")


def error_context(data: dict[str, Any]) -> dict[str, Any]:
    return {"error": data.get("message", "")}


CONTEXTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    StreamEvent.Type.STATUS: status_context,
    StreamEvent.Type.TOKEN: reply_context,
    StreamEvent.Type.TOOL_START: tool_start_context,
    StreamEvent.Type.TOOL_RESULT: tool_result_context,
    StreamEvent.Type.BUDGET: budget_context,
    StreamEvent.Type.GUARDRAILS: guardrails_context,
    StreamEvent.Type.APPROVAL: approval_context,
    StreamEvent.Type.STOP_REASON: stop_reason_context,
    StreamEvent.Type.ERROR: error_context,
    StreamEvent.Type.MODEL_CALL: model_call_context,
}


def context_for(event_type: str, data: dict[str, Any], run_id: int) -> dict[str, Any]:
    if event_type == StreamEvent.Type.STOP_REASON:
        return stop_reason_context(data, run_id)
    return CONTEXTS[event_type](data)


# -- live updates (the consumer) -------------------------------------------------------


# The permissions the run panel's fragments ask (`perms` in their templates).
RUN_PANEL_PERMISSIONS = (
    "chat.operate_run",
    "chat.raise_cost_budget",
    "chat.change_runbudget",
    "controlplane.change_featuretoggle",
)


def viewer_permissions(user: StaffUser) -> PermissionSnapshot:
    """What differs per viewer: the permissions the run panel asks, asked once (a live
    frame is rendered once for every viewer with the same answers)."""
    return PermissionSnapshot.of(user, RUN_PANEL_PERMISSIONS)


def render_event(
    run_id: int,
    event_type: str,
    data: dict[str, Any],
    *,
    perms: PermissionSnapshot,
    oob: bool = True,
) -> str:
    """One event as its fragment (an out-of-band swap unless `oob` is false)."""
    template = FRAGMENTS.get(event_type)
    if template is None:
        return ""  # an event type this page does not show
    context = {
        **context_for(event_type, data, run_id),
        "run_id": run_id,
        "perms": perms,
        "oob": oob,
    }
    return render_to_string(template, context)


def render_live(
    run_id: int, events: list[tuple[int, str, dict[str, Any]]], *, perms: PermissionSnapshot
) -> str:
    """Events `(seq, type, data)` in order as one websocket frame: each fragment,
    then the marker of the last seq the browser now has."""
    if not events:
        return ""
    parts = [render_event(run_id, event_type, data, perms=perms) for _, event_type, data in events]
    parts.append(render_to_string(LAST_SEQ_FRAGMENT, {"seq": events[-1][0], "oob": True}))
    return "".join(parts)


# -- the page (a fold of the run's events) ---------------------------------------------


@dataclass
class RunSnapshot:
    """A run as its events up to `last_seq` show it: what the page renders."""

    last_seq: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] | None = None
    guardrails: dict[str, Any] | None = None
    approval: dict[str, Any] = field(default_factory=dict)
    stop_reason: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    # The reply as pieces `{step, text}`, one per step that wrote text.
    reply: list[dict[str, Any]] = field(default_factory=list)
    # Each model call's and tool call's events by type, in the order the calls started.
    timeline: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fragments(self, run_id: int, perms: PermissionSnapshot) -> dict[str, str]:
        """Each panel as the fragment its events render live (not out of band)."""

        def render(event_type: str, data: dict[str, Any]) -> str:
            return render_event(run_id, event_type, data, perms=perms, oob=False)

        return {
            "status": render(StreamEvent.Type.STATUS, self.status),
            "budget": render(StreamEvent.Type.BUDGET, self.budget or {}),
            "guardrails": render(StreamEvent.Type.GUARDRAILS, self.guardrails or {}),
            "approval": render(StreamEvent.Type.APPROVAL, self.approval),
            "stop_reason": render(StreamEvent.Type.STOP_REASON, self.stop_reason),
            "error": render(StreamEvent.Type.ERROR, {"message": self.error}),
            "reply": render_to_string(FRAGMENTS[StreamEvent.Type.TOKEN], {"pieces": self.reply}),
            "last_seq": render_to_string(LAST_SEQ_FRAGMENT, {"seq": self.last_seq}),
        }

    def timeline_rows(self) -> list[dict[str, Any]]:
        return [
            model_call_row(*parts.values())
            if key.startswith("model")
            else tool_row(*parts.values())
            for key, parts in self.timeline.items()
        ]

    @property
    def reply_text(self) -> str:
        return "".join(piece["text"] for piece in self.reply)


def snapshot_of(run: Run, events: list[StreamEvent]) -> RunSnapshot:
    """The page's view of a run: its events folded, and the run's own fields for
    whatever no event has said yet (a run that has not started, an old run)."""
    snapshot = fold_events(events)
    if not snapshot.status:
        snapshot.status = {"status": run.status, "detail": run.status_detail}
    if snapshot.budget is None:
        snapshot.budget = BudgetTracker(run).meters()
    if snapshot.guardrails is None:
        snapshot.guardrails = Guardrails(run).counters()
    if not snapshot.stop_reason and run.stop_reason in StopReason.values:
        snapshot.stop_reason = explain(run.stop_reason, run=run)
    snapshot.error = snapshot.error or run.last_error
    return snapshot


def fold_events(events: list[StreamEvent]) -> RunSnapshot:
    """The state the events show, in one pass (the events are in seq order)."""
    snapshot = RunSnapshot()
    reply: list[dict[str, Any]] = []
    for event in events:
        data = event.data or {}
        snapshot.last_seq = event.seq
        if event.type == StreamEvent.Type.TOKEN:
            if data.get("step") is not None or not reply:
                reply.append({"step": data.get("step"), "parts": []})
            reply[-1]["parts"].append(str(data.get("text", "")))
        elif event.type in (StreamEvent.Type.TOOL_START, StreamEvent.Type.TOOL_RESULT):
            parts = snapshot.timeline.setdefault(f"tool-{data.get('execution_id', '')}", {})
            # A later result (the final one after "running") replaces the earlier.
            parts[f"{event.type}-{len(parts)}"] = data
        elif event.type == StreamEvent.Type.MODEL_CALL:
            parts = snapshot.timeline.setdefault(f"model-{data.get('call_id', '')}", {})
            parts[str(data.get("phase", ""))] = data
        elif event.type == StreamEvent.Type.STATUS:
            snapshot.status = data
        elif event.type == StreamEvent.Type.BUDGET:
            snapshot.budget = data
        elif event.type == StreamEvent.Type.GUARDRAILS:
            snapshot.guardrails = data
        elif event.type == StreamEvent.Type.APPROVAL:
            snapshot.approval = data
        elif event.type == StreamEvent.Type.STOP_REASON:
            snapshot.stop_reason = data
        elif event.type == StreamEvent.Type.ERROR:
            snapshot.error = str(data.get("message", ""))
    snapshot.reply = [{"step": piece["step"], "text": "".join(piece["parts"])} for piece in reply]
    return snapshot


# -- small formatting ------------------------------------------------------------------


def number(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def level(percent: Decimal | float | None) -> str:
    return "ok" if percent is None else METER_STATES[meter_state(percent)]


def format_amount(value: Decimal | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "$":
        return usd(value)
    if unit == "s":
        return f"{value:.0f} s"
    return f"{value:.0f}"
