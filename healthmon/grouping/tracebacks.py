"""Stack traces: a Python or Java traceback is one error however many records or lines
it was logged in, and it groups by what raised it (the exception types and the frames'
files and functions), not by its first line, its message or its line numbers.

- `TracebackAssembler` joins the consecutive records of one traceback into one message
  (services often log a traceback one line per record).
- `traceback_fingerprint(message)` gives a multi-line message that holds a traceback
  its fingerprint; `Grouper.fingerprint` asks it first. It is a pure function of the
  traceback's shape, so every process agrees without learning anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from healthmon.grouping.fingerprints import Fingerprint, fingerprint_id

PYTHON_START = "Traceback (most recent call last):"
# Between the tracebacks of a chain of Python exceptions.
PYTHON_CHAIN = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_PYTHON_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+, in (?P<function>\S+)')
# The line naming the exception: "ValueError: bad", "pkg.errors.Timeout", "KeyError".
_PYTHON_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::|$)")

_JAVA_FRAME = re.compile(r"^\s+at (?P<frame>[\w$.<>/]+)\((?P<source>[^)]*)\)")
_JAVA_CAUSE = re.compile(r"^\s*(?:Caused by|Suppressed): (?P<type>[\w$.]+)")
_JAVA_OMITTED = re.compile(r"^\s+\.\.\. \d+ (?:more|common frames omitted)")
# The first line: 'Exception in thread "main" java.lang.IllegalStateException: x' or
# the exception alone: "java.io.IOException: x", "com.acme.PaymentError".
_JAVA_HEAD = re.compile(
    r'(?:^Exception in thread "[^"]*" |^)'
    r"(?P<type>(?:[\w$]+\.)+[\w$]*(?:Exception|Error|Throwable))\b"
)
# What varies between two throws of the same error inside a frame's name: a lambda's
# or a generated class's number and an address ("$$Lambda$123/0x0000000800c0b048").
_FRAME_NOISE = re.compile(r"0x[0-9a-fA-F]+|(?<=\$)\d+")
_PACKAGES = re.compile(r"^.*?[/\\](?:site|dist)-packages[/\\]")


@dataclass(frozen=True)
class Traceback:
    """What a traceback's group is made of."""

    language: str
    exceptions: tuple[str, ...]  # outermost first, as printed
    frames: tuple[str, ...]  # "file in function" (Python) or "pkg.Class.method" (Java)

    def fingerprint(self) -> Fingerprint:
        shape = "\n".join((self.language, *self.exceptions, *self.frames))
        template = "\n".join(
            (f"{' / '.join(self.exceptions)} ({self.language} traceback)", *self.frames)
        )
        return Fingerprint(fingerprint_id(shape), template)


def parse_traceback(message: str) -> Traceback | None:
    """The traceback in a message, or None when it holds none."""
    if PYTHON_START in message:
        return _parse_python(message.splitlines())
    if "\tat " in message or "\n    at " in message or "\n  at " in message:
        return _parse_java(message.splitlines())
    return None


def traceback_fingerprint(message: str) -> Fingerprint | None:
    """The fingerprint of the traceback in a message, or None when it holds none."""
    if "\n" not in message:
        return None
    traceback = parse_traceback(message)
    return traceback.fingerprint() if traceback is not None else None


def _parse_python(lines: list[str]) -> Traceback | None:
    exceptions: list[str] = []
    frames: list[str] = []
    inside = False
    for line in lines:
        if line.strip() == PYTHON_START:
            inside = True
            continue
        if not inside:
            continue
        frame = _PYTHON_FRAME.match(line)
        if frame:
            frames.append(f"{_short_path(frame['file'])} in {frame['function']}")
            continue
        if line[:1].isspace() or not line:
            continue  # a frame's source line
        exception = _PYTHON_EXCEPTION.match(line)
        if exception:
            exceptions.append(exception["type"])
            inside = False
    if not exceptions:
        return None
    return Traceback("Python", tuple(exceptions), tuple(frames))


def _parse_java(lines: list[str]) -> Traceback | None:
    exceptions: list[str] = []
    frames: list[str] = []
    for line in lines:
        frame = _JAVA_FRAME.match(line)
        if frame:
            frames.append(_FRAME_NOISE.sub("<*>", frame["frame"]))
            continue
        cause = _JAVA_CAUSE.match(line)
        if cause:
            exceptions.append(cause["type"])
            continue
        if not exceptions:
            head = _JAVA_HEAD.search(line)
            if head:
                exceptions.append(head["type"])
    if not frames or not exceptions:
        return None
    return Traceback("Java", tuple(exceptions), tuple(frames))


def _short_path(path: str) -> str:
    """A frame's file the same wherever the code is installed: from the package down
    for installed libraries, else its last three parts."""
    trimmed = _PACKAGES.sub("", path)
    if trimmed != path:
        return trimmed.replace("\\", "/")
    parts = re.split(r"[/\\]", path)
    return "/".join(parts[-3:])


class TracebackAssembler[Record]:
    """Joins consecutive records that continue a traceback into the record that began
    it. Feed the records in order; each call returns the records now complete, as
    (first record, whole message). A record is held until the next one shows whether
    it continues, so call `flush` at the end of a batch.
    """

    def __init__(self) -> None:
        self._pending: tuple[Record, list[str]] | None = None
        self._python = _PythonState.OUTSIDE

    def feed(self, record: Record, message: str) -> list[tuple[Record, str]]:
        if self._pending is not None and self._continues(message):
            self._pending[1].append(message)
            return []
        done = self.flush()
        self._pending = (record, [message])
        if message.rstrip().endswith(PYTHON_START):
            self._python = _PythonState.FRAMES
        return done

    def flush(self) -> list[tuple[Record, str]]:
        """The record held back, complete: at the end of a batch or a stream."""
        if self._pending is None:
            return []
        record, lines = self._pending
        self._pending = None
        self._python = _PythonState.OUTSIDE
        return [(record, "\n".join(lines))]

    def _continues(self, message: str) -> bool:
        stripped = message.strip()
        if self._python == _PythonState.FRAMES:
            # Frames and their source lines, indented or not (some shippers strip the
            # indent), until the line naming the exception.
            if (
                not message[:1].isspace()
                and not _PYTHON_FRAME.match(message)
                and _PYTHON_EXCEPTION.match(stripped)
            ):
                self._python = _PythonState.RAISED
            return True
        if self._python == _PythonState.RAISED:
            # A chained exception's traceback follows its "During handling..." line; a
            # traceback straight after the exception line is another error.
            if stripped in PYTHON_CHAIN:
                self._python = _PythonState.CHAINED
                return True
            return not stripped
        if self._python == _PythonState.CHAINED:
            if stripped == PYTHON_START:
                self._python = _PythonState.FRAMES
                return True
            return not stripped
        return bool(
            _JAVA_FRAME.match(message) or _JAVA_CAUSE.match(message) or _JAVA_OMITTED.match(message)
        )


class _PythonState:
    OUTSIDE, FRAMES, RAISED, CHAINED = range(4)
