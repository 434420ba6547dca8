"""What a bot's reply may hold, made safe for the chat: user text escaped for the
HTML parse mode, and a reply cut into messages within the platform's length limit.

Replies are HTML (Telegram's parse mode `HTML`, which knows <b>, <i>, <code>, <pre>
and <a>): plain text is escaped with `html.escape`, while markup a command built
with `format_html` (which escapes what it is given) is kept. A message too long is
split at line breaks; a single line too long is cut back to its plain text. Tags
are expected to open and close on one line.
"""

from __future__ import annotations

import html

from django.utils.html import strip_tags
from django.utils.safestring import SafeData

TELEGRAM_MESSAGE_LIMIT = 4096
# More than this many messages for one reply is noise on a phone: the rest is cut.
MAX_MESSAGES_PER_REPLY = 4
CUT = "… (cut: too long for a chat message)"


def as_markup(reply: str) -> str:
    """A reply as the parse mode's markup: plain text escaped, `format_html` kept."""
    if isinstance(reply, SafeData):
        return str(reply)
    # Outside attributes only &, < and > matter; quotes stay readable.
    return html.escape(reply, quote=False)


def split_markup(
    markup: str, limit: int = TELEGRAM_MESSAGE_LIMIT, max_messages: int = MAX_MESSAGES_PER_REPLY
) -> list[str]:
    """The messages that carry `markup`, each at most `limit` characters."""
    messages: list[str] = []
    current = ""
    for line in markup.strip().split("\n"):
        if len(line) > limit:
            line = _cut_line(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            messages.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current.strip():
        messages.append(current)
    if len(messages) <= max_messages:
        return messages
    kept = messages[:max_messages]
    kept[-1] = _with_cut_mark(kept[-1], limit)
    return kept


def _cut_line(line: str, limit: int) -> str:
    """A line too long for one message, as plain text (escaped again) cut to fit: a
    cut inside a tag or an entity would break the whole message."""
    room = limit - len(CUT)
    pieces: list[str] = []
    size = 0
    for character in html.unescape(strip_tags(line)):
        escaped = html.escape(character, quote=False)
        if size + len(escaped) > room:
            break
        pieces.append(escaped)
        size += len(escaped)
    return "".join(pieces) + CUT


def _with_cut_mark(message: str, limit: int) -> str:
    lines = message.split("\n")
    while lines and len("\n".join(lines)) + 1 + len(CUT) > limit:
        lines.pop()
    return "\n".join([*lines, CUT])
