"""Agent runs from a chat bot: `/run [mode] message` starts one as the linked staff
member, `/stop [run]` stops one, and `/status` lists the active runs. Registered from
`ChatConfig.ready()` in the core's command and status registries.

Starting and stopping ask what the web asks: the `chat.operate_run` permission
(Operators and Owners), the run form's validation (a known mode, a message within
its length), the mode's budgets, and the same `open_run` / `request_stop` paths; with
runs switched off a run is refused up front, saying which toggle, as on the web. A run
started from a chat gets a session of its own and one bot message that follows it
(`chat.run_messages`).

The mode is the first word when it names one (`/run ops check the queue`); a first
word ending in ":" is always read as a mode (`/run turbo: ...` is refused, naming
the modes), and so is a mistyped mode name written like one (`deep_reserch`).
Otherwise the whole text is the message, in the normal mode.
"""

from __future__ import annotations

import difflib
import logging
from functools import partial

from django.db import transaction
from django.db.models import QuerySet

from chat import run_messages
from chat.forms import RunForm
from chat.models import ChatSession, Run, RunChatMessage, RunStatus
from chat.runs import RunNotQueued, RunSwitchedOff, open_run, queue_run, request_stop
from controlplane.chat_commands import (
    ButtonPress,
    CommandRequest,
    register_button_handler,
    register_command,
)
from controlplane.status_sections import register_status_section
from controlplane.tiers import StaffUser
from routing.models import Mode

log = logging.getLogger(__name__)

OPERATE = "chat.operate_run"
NOT_ALLOWED = (
    "Starting and stopping runs needs the Operator or Owner tier; your account ({}) may "
    "watch them only (on the web, and with /status)."
)
USAGE = "Send /run followed by what the agent should do, e.g. /run ops check the queue."
RUNS_LISTED = 5


def register() -> None:
    """From `ChatConfig.ready()`."""
    register_command(
        "run", run_command, summary="Start an agent run", usage="[mode] message", slow=True
    )
    register_command("stop", stop_command, summary="Stop your active run", usage="[run id]")
    register_status_section("runs", status_lines, order=10)
    register_button_handler(run_messages.STOP_BUTTON, stop_button)


def mode_names() -> str:
    return ", ".join(Mode.values)


def parse_run(args: str) -> tuple[str, str]:
    """(mode, message) from `/run`'s arguments; raises ValueError for a bad mode."""
    first, _, rest = args.strip().partition(" ")
    word = first.lower().rstrip(":").replace("-", "_")
    if word in Mode.values:
        return word, rest.strip()
    if first.endswith(":") or _near_miss(word):
        raise ValueError(
            f"Unknown mode {first.rstrip(':')!r}: the modes are {mode_names()}. {USAGE} "
            "Without a mode the run is normal; to start the message with that word, give "
            "the mode first: /run normal ..."
        )
    return Mode.NORMAL, args.strip()


def _near_miss(word: str) -> bool:
    """A mode's name mistyped: a word joined like one (deep_reserch) close to a mode's
    name. A plain word never is (a message may start with "Normally")."""
    return "_" in word and bool(difflib.get_close_matches(word, Mode.values, n=1, cutoff=0.8))


def run_command(request: CommandRequest) -> str:
    user = request.user
    assert user is not None  # the dispatcher answers only linked staff here
    if not user.has_perm(OPERATE):
        return NOT_ALLOWED.format(user.get_username())
    if not request.args:
        return f"{USAGE} Modes: {mode_names()}."
    try:
        mode, text = parse_run(request.args)
    except ValueError as exc:
        return str(exc)
    form = RunForm({"message": text, "mode": mode})
    if not form.is_valid():
        problems = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        return f"The run was not started: {problems} {USAGE}"
    try:
        with transaction.atomic():  # a refused run leaves no empty session behind
            session = ChatSession.objects.create(user=user, mode=mode)
            run = open_run(
                session,
                user=user,
                message=form.cleaned_data["message"],
                mode=form.cleaned_data["mode"],
            )
    except RunSwitchedOff as exc:
        return str(exc)
    except ValueError as exc:
        return f"The run was not started: {exc}"
    # Once the run is committed: its message first (so it shows "queued" at once),
    # then the worker.
    transaction.on_commit(partial(launch, run.pk))
    if request.identity.platform in run_messages.FOLLOWED_PLATFORMS:
        run_messages.follow_run(run, request.identity)
        return ""  # the run's own message is the answer
    return f"Started run #{run.pk} ({run.get_mode_display()} mode): {run_messages.run_url(run)}"


def launch(run_id: int) -> None:
    """Send the run's message, then hand the run to a worker; if the queue cannot take
    it, the message says so (the run is gone again)."""
    message = RunChatMessage.objects.select_related("integration").filter(run_id=run_id).first()
    if message is not None:
        try:
            run_messages.refresh(message)
        except Exception:
            log.exception("run %s: its first chat message failed", run_id)
    try:
        queue_run(run_id)
    except RunNotQueued as exc:
        if message is not None:
            run_messages.tell(message, f"Run #{run_id} was not started. {exc}")


def stop_command(request: CommandRequest) -> str:
    user = request.user
    assert user is not None
    if not user.has_perm(OPERATE):
        return NOT_ALLOWED.format(user.get_username())
    wanted = request.args.strip().lstrip("#")
    if wanted:
        if not (wanted.isascii() and wanted.isdigit()):
            return "Send /stop alone for your active run, or /stop followed by a run's number."
        run = Run.objects.filter(pk=int(wanted)).first()
        if run is None:
            return f"There is no run #{wanted}."
    else:
        run = _active_runs(user).first()
        if run is None:
            return "You have no active run: nothing to stop."
    if run.status == RunStatus.STOPPED:
        return f"Run #{run.pk} has already stopped ({run.get_stop_reason_display()})."
    if not request_stop(run, user=user):
        return f"Run #{run.pk} is already stopping."
    run.refresh_from_db(fields=["status"])
    said = (
        f"Stopped run #{run.pk}."
        if run.status == RunStatus.STOPPED
        else f"Asked run #{run.pk} to stop: it stops at its next step (within seconds)."
    )
    others = _active_runs(user).exclude(pk=run.pk).count() if not wanted else 0
    if others:
        said += f" You have {others} more active run{'s' if others > 1 else ''}: /stop NUMBER."
    return said


def stop_button(press: ButtonPress) -> str:
    """The Stop button under a run's message: the web's Stop, for whoever may press it
    there (Operators and Owners)."""
    user = press.user
    assert user is not None  # only linked staff reach a button's handler
    if not user.has_perm(OPERATE):
        return "Stopping runs needs the Operator or Owner tier."
    wanted = press.data.partition(":")[2]
    run = (
        Run.objects.filter(pk=int(wanted)).first()
        if wanted.isascii() and wanted.isdigit()
        else None
    )
    if run is None:
        return "This run no longer exists."
    if run.status == RunStatus.STOPPED:
        return f"Run #{run.pk} has already stopped."
    if not request_stop(run, user=user):
        return f"Run #{run.pk} is already stopping."
    return f"Stopping run #{run.pk}."


def _active_runs(user: StaffUser) -> QuerySet[Run]:
    return (
        Run.objects.filter(started_by=user)
        .exclude(status=RunStatus.STOPPED)
        .order_by("-created_at", "-id")
    )


def status_lines(user: StaffUser) -> list[str]:
    """`/status`'s runs section: the runs not stopped, newest first."""
    active = Run.objects.exclude(status=RunStatus.STOPPED).select_related("started_by")
    count = active.count()
    if not count:
        return ["Runs: none active."]
    lines = [f"Runs: {count} active."]
    for run in active.order_by("-created_at", "-id")[:RUNS_LISTED]:
        status = RunStatus(run.status).label.lower()
        lines.append(
            f"  #{run.pk} {status}, {run_messages.progress(run).lower()} "
            f"({run.started_by.get_username()})"
        )
    return lines
