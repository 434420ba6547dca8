"""The chat bots' `/status`: what the system is doing right now, in a few lines,
assembled from sections each app registers from its `AppConfig.ready()` (the core
never imports an app above it):

    register_status_section("runs", active_run_lines, order=10)

A section is a function of the staff member asking that returns a few plain-text
lines (escaped for the chat by the dispatcher), or none when it has nothing to say.
Sections are shown by `order`, then name. One that fails is logged and shown as
unreadable, never taking the others down. The core's own section is the pending
approvals. Any linked staff member (every tier) may ask: it is what every tier sees
on the web.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from controlplane.approvals import pending_approvals
from controlplane.chat_commands import CommandRequest, register_command
from controlplane.tiers import StaffUser

log = logging.getLogger(__name__)

# A section's lines beyond these are cut: /status is a glance on a phone.
MAX_LINES_PER_SECTION = 6
MAX_LINE_CHARACTERS = 300
APPROVALS_LISTED = 3

StatusLines = Callable[[StaffUser], list[str]]


@dataclass(frozen=True)
class StatusSection:
    name: str
    lines: StatusLines
    order: int


_sections: dict[str, StatusSection] = {}


def register_status_section(name: str, lines: StatusLines, *, order: int = 100) -> None:
    """Show `lines(user)` in `/status`, in `order` (registering a name again replaces it)."""
    _sections[name] = StatusSection(name, lines, order)


def registered_sections() -> list[StatusSection]:
    return sorted(_sections.values(), key=lambda section: (section.order, section.name))


def status_lines(user: StaffUser) -> list[str]:
    """Every section's lines, in order."""
    lines: list[str] = []
    for section in registered_sections():
        try:
            found = [str(line) for line in section.lines(user) if line]
        except Exception:
            log.exception("the /status section %s failed", section.name)
            found = [f"{section.name.capitalize()}: could not be read (see the log)."]
        if len(found) > MAX_LINES_PER_SECTION:
            hidden = len(found) - MAX_LINES_PER_SECTION + 1
            found = [*found[: MAX_LINES_PER_SECTION - 1], f"  … and {hidden} more"]
        lines.extend(_short(line) for line in found)
    return lines


def _short(line: str) -> str:
    if len(line) <= MAX_LINE_CHARACTERS:
        return line
    return line[: MAX_LINE_CHARACTERS - 1] + "…"


def status_reply(request: CommandRequest) -> str:
    assert request.user is not None  # the dispatcher answers only linked staff here
    lines = status_lines(request.user)
    now = timezone.localtime()
    return "\n".join([f"Status at {now:%H:%M} ({now:%Z}):", *(lines or ["Nothing to report."])])


# The core's own section


def approval_lines(user: StaffUser) -> list[str]:
    """Pending approvals: how many, and the ones expiring first."""
    pending = pending_approvals()
    count = pending.count()
    if not count:
        return ["Approvals: none pending."]
    now = timezone.now()
    lines = [f"Approvals: {count} pending."]
    for approval in pending[:APPROVALS_LISTED]:
        who = approval.requested_by.get_username()
        left = _duration(approval.expires_at - now)
        lines.append(f"  #{approval.pk} {approval.action} by {who}, expires in {left}")
    return lines


def _duration(left: timedelta) -> str:
    minutes = max(int(left.total_seconds() // 60), 0)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


register_status_section("approvals", approval_lines, order=20)
register_command("status", status_reply, summary="What the system is doing right now", slow=True)
