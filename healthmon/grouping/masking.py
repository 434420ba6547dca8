"""Turning a log message into the tokens the grouper compares: obviously variable
parts (numbers, hex, addresses, paths, key=value values...) become the wildcard before
any learning, so that learning only has to find the variable words.

One generic configuration for every kind of log: no rule here names a system.
"""

from __future__ import annotations

import re

WILDCARD = "<*>"

# Punctuation peeled off a token's ends before it is judged, kept in the template so
# "(uid=0)" and "(uid=1)" still read as what they were.
_EDGE = "()[]{},;:\"'.!?"
# Inside a token these separate fields that vary on their own: "a=1,b=2", "ret:false".
_FIELD_SPLIT = re.compile(r"([,;=|]|(?<=[A-Za-z_\]]):)")
_SEPARATORS = frozenset(",;=|:")
_ANY_SEPARATOR = re.compile(r"[,;=|:]")
# A word holds fields when one of these separates them; a colon only after a name
# ("index:0"), not inside an address or a time ("10.0.0.1:80", "00:39").
_FIELDS = re.compile(r"[,;=|]|[A-Za-z_\]]:")
# Literals that are always values, whatever the system.
_LITERALS = frozenset({"true", "false", "null", "none", "nil", "undefined", "nan"})
# Parts of a written date ("Fri Jun 17 07:07:00 2005"): a date is always a value.
_DATE_WORDS = frozenset(
    {"mon", "tue", "wed", "thu", "fri", "sat", "sun", "jan", "feb", "mar", "apr"}
    | {"jun", "jul", "aug", "sep", "oct", "nov", "dec", "utc", "gmt"}
)
# Units that follow a number and belong to its value: "3 ms", "2034 bytes", "1.9 KB".
_UNITS = frozenset(
    {"b", "kb", "mb", "gb", "tb", "kib", "mib", "gib", "tib", "byte", "bytes", "k", "m", "g"}
    | {"ns", "us", "µs", "ms", "s", "sec", "secs", "second", "seconds", "min", "mins"}
    | {"minute", "minutes", "h", "hr", "hrs", "hour", "hours", "day", "days", "%", "percent"}
)

_HAS_DIGIT = re.compile(r"\d")
# A path or URL: "/var/log/x", "C:\\x", "hdfs://host/x", "./run.sh".
_PATH = re.compile(r"^(?:[a-zA-Z][\w+.-]*://|[a-zA-Z]:\\|\.{0,2}/[^/\s]*/|~/)")
# A host name of three or more labels: "proxy.cse.cuhk.edu.hk", "r1.googlevideo.com".
_HOST = re.compile(r"^(?:[a-zA-Z0-9-]+\.){2,}[a-zA-Z]{2,}$")
# An address with its port: "github.com:443", "wpad:80" (not "index:0", a field).
_HOST_PORT = re.compile(r"^(?:(?:[\w-]+\.)+[\w-]+:\d+|[a-z][\w-]*:\d{2,5})$")
_EMAIL = re.compile(r"^[\w.+-]+@[\w-]+\.[\w.-]+$")


def is_variable(core: str) -> bool:
    """Whether a token stripped of its edge punctuation is obviously a value."""
    if not core:
        return False
    if _HAS_DIGIT.search(core) or core.lower() in _LITERALS or core.lower() in _DATE_WORDS:
        return True
    if _PATH.match(core) or _EMAIL.match(core):
        return True
    return core.islower() and bool(_HOST.match(core))


def _mask_word(word: str) -> str:
    """One whitespace-separated word: a value inside it becomes the wildcard, its edge
    punctuation stays."""
    core = word.strip(_EDGE)
    if not core:
        return word
    start = len(word) - len(word.lstrip(_EDGE))
    end = start + len(core)
    if _PATH.match(core) or _HOST_PORT.match(core) or not _FIELDS.search(core):
        if is_variable(core):
            return word[:start] + WILDCARD + word[end:]
        return word
    # Fields inside one word ("a=1,b=2", "index:0"): each is judged on its own.
    masked: list[str] = []
    after_equals = False
    for part in _FIELD_SPLIT.split(core):
        if part in _SEPARATORS:
            masked.append(part)
            after_equals = part == "="
            continue
        if part and (after_equals or is_variable(part.strip(_EDGE))):
            masked.append(_mask_value(part))
        else:
            masked.append(part)
        after_equals = False
    return word[:start] + "".join(masked) + word[end:]


def _mask_value(part: str) -> str:
    core = part.strip(_EDGE)
    if not core:
        return part
    start = len(part) - len(part.lstrip(_EDGE))
    return part[:start] + WILDCARD + part[start + len(core) :]


# A quoted value after "=" may hold spaces (tag="View Lock"): it is one value.
_QUOTED_VALUE = re.compile(r"""(?<==)(?:"[^"]*"|'[^']*')""")

# How `Masker` remembers a word: what it masks to and how it joins its neighbours.
_CONSTANT, _VALUE, _UNIT = 0, 1, 2
# Words remembered by a `Masker`; past it the memory is dropped and rebuilt.
WORDS_LIMIT = 100_000


class Masker:
    """`masked_tokens` with a memory of the words it has judged: the words of a log
    repeat (its constants always, many of its values), and judging a word costs far
    more than looking it up."""

    def __init__(self) -> None:
        self._words: dict[str, tuple[str, int]] = {}

    def tokens(self, message: str) -> list[str]:
        """The message's words with values masked, runs of values collapsed into one
        wildcard (a value may span several words: "3 ms", "(1.98 KB)")."""
        words = self._words
        tokens: list[str] = []
        previous_is_value = False
        if '="' in message or "='" in message:
            message = _QUOTED_VALUE.sub(f'"{WILDCARD}"', message)
        for word in message.split():
            judged = words.get(word)
            if judged is None:
                judged = _judge(word)
                if len(words) >= WORDS_LIMIT:
                    words.clear()
                words[word] = judged
            token, kind = judged
            if kind == _CONSTANT:
                tokens.append(token)
                previous_is_value = False
            elif not previous_is_value:
                if kind == _VALUE:
                    tokens.append(WILDCARD)
                    previous_is_value = True
                else:
                    tokens.append(token)
            # else: a value or a unit right after a value is part of that value.
        return tokens


# An empty value in its brackets or quotes: "connection from x () at", "name=''".
_EMPTY = frozenset({"()", "[]", "{}", "<>", '""', "''", "(),", "[],", '"",', "'',"})


def _judge(word: str) -> tuple[str, int]:
    if word.isalpha():  # most words: no regex needed
        lower = word.lower()
        if lower in _LITERALS or lower in _DATE_WORDS:
            return WILDCARD, _VALUE
        return word, _UNIT if lower in _UNITS else _CONSTANT
    if _HAS_DIGIT.search(word) and not _ANY_SEPARATOR.search(word):
        return WILDCARD, _VALUE  # what `_mask_word` would find, sooner
    token = _mask_word(word)
    if _is_value_only(token) or word in _EMPTY:
        return WILDCARD, _VALUE
    if word.strip(_EDGE).lower() in _UNITS:
        return token, _UNIT
    return token, _CONSTANT


def masked_tokens(message: str) -> list[str]:
    """The message's words with values masked, runs of values collapsed into one
    wildcard (a value may span several words: "3 ms", "(1.98 KB)")."""
    return Masker().tokens(message)


def _is_value_only(token: str) -> bool:
    """A token that is a wildcard and punctuation: "(<*>", "<*>,", "<*>:<*>"."""
    if WILDCARD not in token:
        return False
    return not token.replace(WILDCARD, "").strip(_EDGE + "=-/@#*+~")
