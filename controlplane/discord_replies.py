"""A chat reply made into a Discord message: its text as Discord's markdown, cut to
Discord's 2000 characters, and its buttons as message components.

Replies are written once for every platform (see `controlplane.chat_replies`): plain
text, or markup a command built with `format_html` in the small HTML Telegram knows.
Plain text is escaped here for Discord's markdown (a `*` or a `` ` `` a person typed
stays that character); markup is translated tag by tag (<b> to **, <code> to `, a
link to [text](url)), its text escaped the same way. Mentions never ping: every
message goes out with `allowed_mentions` empty.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from django.utils.safestring import SafeData

from controlplane.chat_commands import Button
from controlplane.discord import MESSAGE_LIMIT

CUT = "… (cut: too long for a chat message)"
# Discord's markdown anywhere in a line: emphasis, code, spoilers, masked links,
# mentions and custom emoji (<@id>, <:name:id>, @everyone), and the backslash itself.
INLINE_MARKUP = re.compile(r"([\\*_~`|\[\]<@])")
# And at a line's start: headings, subtext (-#), quotes, lists.
LINE_MARKUP = re.compile(r"^([ \t]*)([#>+-])", re.MULTILINE)
NUMBERED_ITEM = re.compile(r"^([ \t]*\d+)\.(?=\s)", re.MULTILINE)
# Components: at most 5 rows of 5 buttons; a label 80 characters, a custom_id 100.
MAX_ROWS = 5
MAX_BUTTONS_PER_ROW = 5
PRIMARY = 1
ACTION_ROW = 1
BUTTON = 2

_WRAPPERS = {
    "b": "**",
    "strong": "**",
    "i": "*",
    "em": "*",
    "u": "__",
    "ins": "__",
    "s": "~~",
    "strike": "~~",
    "del": "~~",
}


def escape_markdown(text: str) -> str:
    text = INLINE_MARKUP.sub(r"\\\1", text)
    return NUMBERED_ITEM.sub(r"\1\\.", LINE_MARKUP.sub(r"\1\\\2", text))


def as_discord_markdown(reply: str) -> str:
    """A reply as Discord's markdown: plain text escaped, `format_html` translated."""
    if not isinstance(reply, SafeData):
        return escape_markdown(reply)
    translator = _Translator()
    translator.feed(str(reply))
    translator.close()
    return translator.markdown()


def truncated(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` within `limit` characters: cut at the last line break that leaves room
    for the mark (else anywhere), never just after a lone backslash."""
    text = text.strip() or "…"
    if len(text) <= limit:
        return text
    room = limit - len(CUT) - 1
    head = text[:room]
    line_break = head.rfind("\n")
    if line_break > room // 2:
        head = head[:line_break]
    while head.endswith("\\") and not head.endswith("\\\\"):
        head = head[:-1]
    if head.count("```") % 2:
        # An unclosed code block would swallow the mark.
        head = head[: limit - len(CUT) - 5] + "\n```"
    return f"{head}\n{CUT}"


def message_text(reply: str) -> str:
    return truncated(as_discord_markdown(reply))


def components(buttons: tuple[tuple[Button, ...], ...]) -> list[dict[str, Any]]:
    """A reply's buttons as action rows; pressing one sends its data as custom_id."""
    rows = []
    for row in buttons[:MAX_ROWS]:
        rendered = [
            {"type": BUTTON, "style": PRIMARY, "label": b.label[:80], "custom_id": b.data[:100]}
            for b in row[:MAX_BUTTONS_PER_ROW]
        ]
        if rendered:
            rows.append({"type": ACTION_ROW, "components": rendered})
    return rows


class _Translator(HTMLParser):
    """Telegram's HTML (what `format_html` replies are written in) to markdown."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._open: list[tuple[str, str]] = []
        self._code = 0
        self._link: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _WRAPPERS:
            self._parts.append(_WRAPPERS[tag])
            self._open.append((tag, _WRAPPERS[tag]))
        elif tag == "code" and not self._code:
            self._code += 1
            self._parts.append("`")
            self._open.append((tag, "`"))
        elif tag == "pre":
            self._code += 1
            self._parts.append("```\n")
            self._open.append((tag, "\n```"))
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self._link.append(href)
            self._parts.append("[")
            self._open.append((tag, "]"))

    def handle_endtag(self, tag: str) -> None:
        if not self._open or self._open[-1][0] != tag:
            return
        _, closing = self._open.pop()
        if tag in ("code", "pre"):
            self._code -= 1
        if tag == "a":
            href = self._link.pop()
            if href.startswith(("https://", "http://")):
                self._parts.append(f"]({href.replace(')', '%29').replace(' ', '%20')})")
            else:
                self._parts.append("]")
            return
        self._parts.append(closing)

    def handle_data(self, data: str) -> None:
        if self._code:
            # Markdown escapes do not work in code, and a backtick would end it: it
            # becomes a look-alike (MODIFIER LETTER GRAVE ACCENT).
            self._parts.append(data.replace("`", "\u02cb"))
        else:
            self._parts.append(escape_markdown(data))

    def markdown(self) -> str:
        while self._open:
            tag, closing = self._open.pop()
            self._parts.append("]" if tag == "a" else closing)
        return "".join(self._parts)
