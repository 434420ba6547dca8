"""Why a run stopped, in words, with what a person can do about it.

`explain(reason, run=run, **context)` builds the `stop_reason` event:
`{reason, label, suggestion, next_action}`. The suggestion is a recovery a person can
act on; `next_action` is the one step the page offers, one click where possible:

- `{"kind": "follow_up"}`: ask a follow-up in the same session;
- `{"kind": "retry", "mode"}`: run the same message again;
- `{"kind": "retry_other_mode", "mode"}`: run it again in another mode;
- `{"kind": "raise_budget", "budget", "value", "mode", "tier"}`: run it again with
  that limit raised (`chat.runs.retry_run(run, limits={budget: value})`); `tier` is
  who may (a cost budget is money: Owners);
- `{"kind": "approve", "approval_id", "url"}`: decide the pending approval;
- `{"kind": "enable_toggle", "toggle", "url", "tier"}`: switch the kill switch back on
  (the url opens that toggle's switch on the Toggles page).

Every action also has a `label`, the words for its button.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.urls import reverse

from chat import budget_bounds
from chat.models import Run, StopReason
from controlplane.money import usd
from controlplane.toggle_changes import toggle_page_url
from routing.models import Mode

Advice = tuple[str, dict[str, Any]]  # (suggestion, next action)

# The mode to try when a run is stuck in its own: a stronger model for a confused
# agent; for a failing provider, any other mode (its policy may allow other models).
STRONGER_MODE = {
    Mode.NORMAL: Mode.DEEP_RESEARCH,
    Mode.OPS: Mode.DEEP_RESEARCH,
    Mode.CODE: Mode.DEEP_RESEARCH,
    Mode.DEEP_RESEARCH: Mode.CODE,
}
CHEAPER_MODE = {
    Mode.NORMAL: Mode.OPS,
    Mode.CODE: Mode.NORMAL,
    Mode.DEEP_RESEARCH: Mode.NORMAL,
    Mode.OPS: Mode.NORMAL,
}
OTHER_MODE = {
    Mode.NORMAL: Mode.CODE,
    Mode.CODE: Mode.NORMAL,
    Mode.OPS: Mode.NORMAL,
    Mode.DEEP_RESEARCH: Mode.NORMAL,
}


def _mode_label(mode: str) -> str:
    return Mode(mode).label if mode in Mode.values else mode


def retry(run: Run, label: str = "Run it again") -> dict[str, Any]:
    return {"kind": "retry", "label": label, "mode": run.mode}


def retry_other_mode(run: Run, choices: dict[Mode, Mode]) -> dict[str, Any]:
    mode = choices.get(Mode(run.mode), Mode.NORMAL) if run.mode in Mode.values else Mode.NORMAL
    return {
        "kind": "retry_other_mode",
        "label": f"Retry in {_mode_label(mode)} mode",
        "mode": str(mode),
    }


def raise_budget(run: Run, budget: str, value: Any, shown: str, *, tier: str) -> dict[str, Any]:
    return {
        "kind": "raise_budget",
        "label": f"Run again with {shown}",
        "budget": budget,
        "value": str(value),
        "mode": run.mode,
        "tier": tier,
    }


# -- one function per reason -----------------------------------------------------------


def _completed(run: Run, context: dict[str, Any]) -> Advice:
    return (
        "The agent finished its answer. Read it, and ask a follow-up to go further.",
        {"kind": "follow_up", "label": "Ask a follow-up"},
    )


def _at_ceiling(run: Run, what: str, choices: dict[Mode, Mode]) -> Advice:
    """A budget already at the most a run may have (`chat.budget_bounds`): raising it
    is not on offer; a smaller request or another mode is."""
    return (
        f"The run used {what}, the most any run may have. Split the request into smaller "
        "ones, or retry in another mode.",
        retry_other_mode(run, choices),
    )


def _max_steps(run: Run, context: dict[str, Any]) -> Advice:
    value = min(run.max_steps * 2, budget_bounds.STEPS_CEILING)
    if value <= run.max_steps:
        return _at_ceiling(run, f"all {run.max_steps} steps", STRONGER_MODE)
    return (
        f"The agent used all {run.max_steps} steps without finishing. Run it again with "
        f"a larger step budget ({value} steps), or narrow the request so it needs fewer "
        "steps.",
        raise_budget(run, "max_steps", value, f"{value} steps", tier="operator"),
    )


def _wall_clock(run: Run, context: dict[str, Any]) -> Advice:
    value = min(run.max_wall_clock_seconds * 2, budget_bounds.WALL_CLOCK_CEILING_SECONDS)
    if value <= run.max_wall_clock_seconds:
        return _at_ceiling(run, f"{run.max_wall_clock_seconds} s", STRONGER_MODE)
    return (
        f"The run reached its time limit of {run.max_wall_clock_seconds} s. Run it again "
        f"with {value} s, or split the request into smaller ones.",
        raise_budget(run, "max_wall_clock_seconds", value, f"{value} s", tier="operator"),
    )


def _cost_budget(run: Run, context: dict[str, Any]) -> Advice:
    if context.get("daily_budget"):
        return (
            "A daily spending budget refused the next model call "
            f"({context['daily_budget']}). An Owner can raise that budget on the Routing "
            "page; otherwise it resets at midnight. A cheaper mode may still fit.",
            retry_other_mode(run, CHEAPER_MODE),
        )
    value = min(Decimal(run.max_cost) * 2, budget_bounds.COST_CEILING)
    if value <= Decimal(run.max_cost):
        return _at_ceiling(run, f"a cost budget of {usd(value)}", CHEAPER_MODE)
    return (
        f"The run spent its cost budget of {usd(Decimal(run.max_cost))}. An Owner can run "
        f"it again with {usd(value)}; or make the request smaller, or use a cheaper mode.",
        raise_budget(run, "max_cost", value.normalize(), usd(value), tier="owner"),
    )


def _loop_detected(run: Run, context: dict[str, Any]) -> Advice:
    tool = context.get("tool") or "a tool"
    return (
        f"The agent kept calling {tool} with the same arguments and getting nowhere. "
        "Rephrase the request with what to do with that result, or retry in a mode with a "
        "stronger model.",
        retry_other_mode(run, STRONGER_MODE),
    )


def _no_progress(run: Run, context: dict[str, Any]) -> Advice:
    return (
        "Several steps in a row changed nothing: same answer, same tool results. Give the "
        "agent what it is missing (a name, an id, the next step), or retry in a mode with "
        "a stronger model.",
        retry_other_mode(run, STRONGER_MODE),
    )


def _repeated_failure(run: Run, context: dict[str, Any]) -> Advice:
    error = context.get("error") or run.last_error or "see the tool timeline"
    return (
        f"The same failure kept happening ({error}). Fix its cause first (a host missing "
        "from CHAT_HTTP_ALLOWLIST, a service that is down, a wrong name), then run it "
        "again.",
        retry(run, "Run it again once fixed"),
    )


def _awaiting_approval(run: Run, context: dict[str, Any]) -> Advice:
    approval_id = context.get("approval_id") or run.pending_approval_id
    what = f"the {context['tool']} tool" if context.get("tool") else "the next model call"
    if context.get("expired"):
        return (
            f"Approval #{approval_id} for {what} expired before anyone decided it, so the "
            "run stopped there. Run it again and ask another Operator or an Owner to "
            "decide while the approval is open.",
            retry(run, "Run it again"),
        )
    return (
        f"The run is paused before {what}: approval #{approval_id} must be decided by "
        "another Operator or an Owner (never the person who started the run). Once "
        "approved, the run resumes where it paused; if rejected, it stops.",
        {
            "kind": "approve",
            "label": f"Decide approval #{approval_id}",
            "approval_id": approval_id,
            "url": reverse("approvals"),
        },
    )


def _stopped_by_user(run: Run, context: dict[str, Any]) -> Advice:
    if context.get("rejected_by"):
        note = f' ("{context["note"]}")' if context.get("note") else ""
        return (
            f"{context['rejected_by']} rejected approval #{context.get('approval_id')} for "
            f"{context.get('tool') or 'the next step'}{note}. Run it again asking for "
            "something that does not need that step, or talk to them first.",
            retry(run, "Run it again"),
        )
    who = context.get("by") or "A person"
    return (
        f"{who} stopped the run; what it did so far is kept. Run it again when ready, or "
        "ask a follow-up.",
        retry(run, "Run it again"),
    )


def _toggle_off(run: Run, context: dict[str, Any]) -> Advice:
    toggle = context.get("toggle") or "chat.runs.enabled"
    return (
        f"Agent runs are switched off (feature toggle {toggle}). An Owner can switch it "
        "back on on the Toggles page, then run this again.",
        {
            "kind": "enable_toggle",
            "label": f"Switch {toggle} on",
            "toggle": toggle,
            "url": toggle_page_url(toggle),
            "tier": "owner",
        },
    )


def _provider_error(run: Run, context: dict[str, Any]) -> Advice:
    return (
        "Every model of the route failed (the error says why). Retry in a minute; if it "
        "persists, retry in another mode, whose policy may allow other models, and check "
        "the provider on the Routing page.",
        retry_other_mode(run, OTHER_MODE),
    )


def _worker_lost(run: Run, context: dict[str, Any]) -> Advice:
    return (
        "The worker running this run stopped answering (a crash, a restart or a time "
        "limit). Everything it did so far is kept. Run it again; if it keeps happening, "
        "check the worker processes and their logs.",
        retry(run, "Run it again"),
    )


def _invalid_budget(run: Run, context: dict[str, Any]) -> Advice:
    problems = "; ".join(context.get("problems") or []) or "a budget was out of bounds"
    return (
        f"The run's budgets could not be used ({problems}): they were stored before "
        "budgets were checked. Run it again: a new run takes its mode's budgets, and a "
        "raised one is checked against the bounds.",
        retry(run, "Run it again"),
    )


ADVICE: dict[StopReason, Callable[[Run, dict[str, Any]], Advice]] = {
    StopReason.COMPLETED: _completed,
    StopReason.MAX_STEPS: _max_steps,
    StopReason.WALL_CLOCK: _wall_clock,
    StopReason.COST_BUDGET: _cost_budget,
    StopReason.LOOP_DETECTED: _loop_detected,
    StopReason.NO_PROGRESS: _no_progress,
    StopReason.REPEATED_FAILURE: _repeated_failure,
    StopReason.AWAITING_APPROVAL: _awaiting_approval,
    StopReason.STOPPED_BY_USER: _stopped_by_user,
    StopReason.TOGGLE_OFF: _toggle_off,
    StopReason.PROVIDER_ERROR: _provider_error,
    StopReason.WORKER_LOST: _worker_lost,
    StopReason.INVALID_BUDGET: _invalid_budget,
}


def explain(reason: str, *, run: Run, **context: Any) -> dict[str, Any]:
    """The `stop_reason` event for a run that stopped (or paused) for `reason`."""
    stop = StopReason(reason)
    suggestion, next_action = ADVICE[stop](run, context)
    return {
        "reason": str(stop),
        "label": str(stop.label),
        "suggestion": suggestion,
        "next_action": next_action,
    }
