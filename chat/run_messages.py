"""The bot message that follows a run started from a chat (`/run`): one message,
kept up to date with the run's status, step and cost, ending with its stop reason,
the recovery suggestion and a link to the run's page.

How it follows the run: a `RunChatMessage` row says which chat message shows which
run and what it shows (`shown_text`, up to the run's event `shown_seq`). A periodic
sweep (`refresh_run_messages`, every `CHATOPS_RUN_MESSAGE_SECONDS`, on the one
schedule: Celery beat in scale mode, the in-process scheduler in embedded mode) reads
each unfinished row's run and writes the message when the run has new events and the
text changed. It reads the database only, so it works wherever the run's worker is
(in-process or a Celery worker), needs no browser, and picks up where it was after a
restart: the row is the state. `/run` also refreshes once at once, so the message
appears before the run is handed to a worker.

The same on Telegram and Discord (through `controlplane.chat_messengers`), within
both platforms' limits: a message is written at most once every
`MIN_WRITE_SECONDS`; what happened in between is coalesced (the text is always
rendered from the run as it is now, so the last state is the one sent). The slot is
claimed with one conditional UPDATE of `next_write_at`, so two sweeps (a slow one and
the next) never write the same message twice. A rate limit (429) waits the
platform's `retry_after`; an outage backs off; a message the chat no longer has is
sent again; a chat that refuses the bot is given up after `GIVE_UP_AFTER` failures.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from chat.models import Message, Run, RunChatMessage, RunStatus, StreamEvent
from controlplane.chat_accounts import ChatIdentity
from controlplane.chat_commands import Button
from controlplane.chat_messengers import (
    Buttons,
    ChatRateLimited,
    ChatSendError,
    ChatUnavailable,
    MessageGone,
    messenger_for,
)
from controlplane.models import ChatAccount
from controlplane.money import usd

log = logging.getLogger(__name__)

MIN_WRITE_SECONDS = 1.0  # Telegram: about one message a second per chat; Discord: 5 in 5 s
GIVE_UP_AFTER = 5
MAX_BACKOFF_SECONDS = 300
ANSWER_EXCERPT = 1500  # characters of the agent's answer shown in the final message
DETAIL_EXCERPT = 300

# The platforms whose messages this module writes.
FOLLOWED_PLATFORMS = frozenset({ChatAccount.Platform.TELEGRAM, ChatAccount.Platform.DISCORD})

# The Stop button under a run's message: its data is "run-stop:<run id>".
STOP_BUTTON = "run-stop"

# The moment a refresh acts at; tests drive a fake one.
clock: Callable[[], datetime] = timezone.now


def follow_run(run: Run, identity: ChatIdentity) -> RunChatMessage:
    """The chat `identity` writes from will show `run` (sent at the first refresh)."""
    return RunChatMessage.objects.create(
        run=run,
        platform=identity.platform,
        integration=identity.integration,
        chat_id=identity.chat_id,
        next_write_at=clock(),
    )


def refresh_run_messages(now: datetime | None = None) -> int:
    """The sweep: write every followed run's message that is due. How many were written."""
    now = now or clock()
    due = RunChatMessage.objects.filter(
        finished_at__isnull=True, next_write_at__lte=now, platform__in=FOLLOWED_PLATFORMS
    )
    written = 0
    for message in due.select_related("integration").order_by("next_write_at", "id"):
        try:
            written += refresh(message, now)
        except Exception:
            # One message that cannot be written must not keep the sweep from the others.
            log.exception("could not refresh the chat message of run %s", message.run_id)
    return written


def refresh(message: RunChatMessage, now: datetime | None = None) -> bool:
    """Write `message` if its run changed and its slot is free. Whether it was written."""
    now = now or clock()
    run = Run.objects.select_related("session").filter(pk=message.run_id).first()
    if run is None or message.finished_at is not None:
        return False
    if message.platform not in FOLLOWED_PLATFORMS:
        return False
    last_seq = run.next_seq - 1
    final = run.status == RunStatus.STOPPED
    if message.message_id and last_seq == message.shown_seq and not final:
        return False  # nothing happened since it was last written
    text = message_text(run)
    if message.message_id and text == message.shown_text:
        _written(message, text, last_seq, final, now, claimed=False)
        return False
    if not _claim(message, now):
        return False
    try:
        _send_or_edit(message, text, () if final else stop_keyboard(run))
    except ChatSendError as exc:
        _failed(message, exc, now)
        return False
    _written(message, text, last_seq, final, now, claimed=True)
    return True


def _claim(message: RunChatMessage, now: datetime) -> bool:
    """Take the message's next write slot (one conditional UPDATE): the throttle, and
    no two refreshes writing the same message at once."""
    until = now + timedelta(seconds=MIN_WRITE_SECONDS)
    return bool(
        RunChatMessage.objects.filter(
            pk=message.pk, finished_at__isnull=True, next_write_at__lte=now
        ).update(next_write_at=until)
    )


def stop_keyboard(run: Run) -> Buttons:
    return ((Button(f"Stop run #{run.pk}", f"{STOP_BUTTON}:{run.pk}"),),)


def _send_or_edit(message: RunChatMessage, text: str, buttons: Buttons = ()) -> None:
    with messenger_for(message.integration) as messenger:
        if not message.message_id:
            message.message_id = messenger.send(message.chat_id, text, buttons)
            RunChatMessage.objects.filter(pk=message.pk).update(message_id=message.message_id)
            return
        # An edit without the buttons removes them: the final state has no Stop.
        messenger.edit(message.chat_id, message.message_id, text, buttons)


def _written(
    message: RunChatMessage, text: str, seq: int, final: bool, now: datetime, *, claimed: bool
) -> None:
    fields: dict[str, Any] = {"shown_text": text, "shown_seq": seq, "failures": 0}
    if final:
        fields["finished_at"] = now
    if claimed:
        fields["last_error"] = ""
    RunChatMessage.objects.filter(pk=message.pk).update(**fields)
    for name, value in fields.items():
        setattr(message, name, value)


def _failed(message: RunChatMessage, exc: ChatSendError, now: datetime) -> None:
    failures = message.failures + 1
    fields: dict[str, Any] = {"failures": failures, "last_error": str(exc)[:300]}
    if isinstance(exc, ChatRateLimited):
        fields["failures"] = message.failures  # the platform said when: not a failure
        fields["next_write_at"] = now + timedelta(seconds=max(exc.retry_after, 1))
    elif isinstance(exc, ChatUnavailable):
        backoff = min(MIN_WRITE_SECONDS * 2**failures, MAX_BACKOFF_SECONDS)
        fields["next_write_at"] = now + timedelta(seconds=backoff)
    elif isinstance(exc, MessageGone) and message.message_id:
        fields["message_id"] = ""  # deleted in the chat: the next refresh sends a new one
    elif failures >= GIVE_UP_AFTER:
        fields["finished_at"] = now  # a chat that refuses the bot (blocked, gone)
    log.warning("run %s: its chat message was not written: %s", message.run_id, exc)
    RunChatMessage.objects.filter(pk=message.pk).update(**fields)
    for name, value in fields.items():
        setattr(message, name, value)


def tell(message: RunChatMessage, text: str) -> None:
    """Write `text` (plain) into the run's message as is, once: for a run that could
    not be started, whose row is gone with it."""
    try:
        _send_or_edit(message, format_html("{}", text))
    except ChatSendError as exc:
        log.warning("run %s: its chat message was not written: %s", message.run_id, exc)


# -- what the message says ----------------------------------------------------------------


def run_url(run: Run) -> str:
    path = f"{reverse('chat:session', args=[run.session_id])}?run={run.pk}"
    return f"{settings.SITE_URL.rstrip('/')}{path}"


def approvals_url() -> str:
    return f"{settings.SITE_URL.rstrip('/')}{reverse('approvals')}"


def message_text(run: Run) -> SafeString:
    """The message for the run as it is now (a chat reply's markup; user text escaped)."""
    status = RunStatus(run.status)
    if status == RunStatus.STOPPED:
        lines = _stopped_lines(run)
    elif status == RunStatus.WAITING_APPROVAL:
        lines = _waiting_lines(run)
    else:
        lines = [
            format_html(
                "<b>Run #{}</b> ({} mode): {}", run.pk, run.get_mode_display(), status.label
            ),
            format_html("{}", _excerpt(run.status_detail, DETAIL_EXCERPT)),
            format_html("{}", progress(run)),
        ]
    lines.append(format_html('<a href="{}">Open run #{}</a>', run_url(run), run.pk))
    return format_html_join("\n", "{}", ((line,) for line in lines if line))


def progress(run: Run) -> str:
    return f"Step {run.steps} of {run.max_steps} · cost {usd(run.cost)} of {usd(run.max_cost)}"


def _stopped_lines(run: Run) -> list[SafeString]:
    stop = _latest(run, StreamEvent.Type.STOP_REASON)
    label = stop.get("label") or run.get_stop_reason_display() or "stopped"
    lines = [format_html("<b>Run #{} stopped: {}</b>", run.pk, label)]
    answer = (
        Message.objects.filter(run=run, role=Message.Role.ASSISTANT)
        .exclude(content="")
        .order_by("-id")
        .values_list("content", flat=True)
        .first()
    )
    if answer:
        lines.append(format_html("{}", _excerpt(answer, ANSWER_EXCERPT)))
    if run.last_error:
        lines.append(format_html("Error: {}", _excerpt(run.last_error, DETAIL_EXCERPT)))
    if stop.get("suggestion"):
        lines.append(format_html("<i>{}</i>", stop["suggestion"]))
    lines.append(format_html("{}", progress(run)))
    return lines


def _waiting_lines(run: Run) -> list[SafeString]:
    stop = _latest(run, StreamEvent.Type.STOP_REASON)
    approval_id = run.pending_approval_id
    lines = [
        format_html(
            "<b>Run #{}</b> ({} mode): waiting for approval #{}",
            run.pk,
            run.get_mode_display(),
            approval_id,
        ),
        format_html("{}", stop.get("suggestion") or run.status_detail),
        format_html('<a href="{}">Decide approval #{}</a>', approvals_url(), approval_id),
        format_html("{}", progress(run)),
    ]
    return lines


def _latest(run: Run, event_type: str) -> dict[str, Any]:
    event = run.events.filter(type=event_type).order_by("-seq").only("data").first()
    return event.data if event is not None and isinstance(event.data, dict) else {}


def _excerpt(text: str, limit: int) -> str:
    """`text` cut so that, escaped for HTML, it takes at most `limit` characters (an
    answer full of "&" must not push the message past Telegram's 4096; Discord's 2000
    cut the whole message at a line break)."""
    text = text.strip()
    size = 0
    for index, character in enumerate(text):
        size += len(html.escape(character, quote=True))
        if size > limit - 1:
            return text[:index] + "…"
    return text
