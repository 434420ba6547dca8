"""Log levels, as Python's logging numbers them, read from whatever a source sends:
a name in any case or common spelling ("WARN", "err", "fatal"), Python's numbers, or
OpenTelemetry's severity numbers (1-24)."""

from __future__ import annotations

from django.db import models


class Level(models.IntegerChoices):
    DEBUG = 10, "debug"
    INFO = 20, "info"
    WARNING = 30, "warning"
    ERROR = 40, "error"
    CRITICAL = 50, "critical"


_NAMES = {
    "trace": Level.DEBUG,
    "debug": Level.DEBUG,
    "dbg": Level.DEBUG,
    "fine": Level.DEBUG,
    "finer": Level.DEBUG,
    "finest": Level.DEBUG,
    "verbose": Level.DEBUG,
    "info": Level.INFO,
    "information": Level.INFO,
    "informational": Level.INFO,
    "notice": Level.INFO,
    "log": Level.INFO,
    "warn": Level.WARNING,
    "warning": Level.WARNING,
    "error": Level.ERROR,
    "err": Level.ERROR,
    "severe": Level.ERROR,
    "critical": Level.CRITICAL,
    "crit": Level.CRITICAL,
    "fatal": Level.CRITICAL,
    "alert": Level.CRITICAL,
    "emerg": Level.CRITICAL,
    "emergency": Level.CRITICAL,
    "panic": Level.CRITICAL,
}


def parse_level(value: object, default: Level = Level.INFO) -> Level:
    """The level a source meant; `default` when it said nothing recognisable."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int):
        return otel_severity(value) if value <= 24 else _python_number(value)
    text = str(value).strip().lower()
    if text.isdigit():
        return parse_level(int(text), default)
    return _NAMES.get(text, _NAMES.get(text.rstrip("0123456789"), default))


def otel_severity(number: int) -> Level:
    """OpenTelemetry's SeverityNumber: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN,
    17-20 ERROR, 21-24 FATAL; 0 (unspecified) reads as info."""
    if number <= 0:
        return Level.INFO
    if number <= 8:
        return Level.DEBUG
    if number <= 12:
        return Level.INFO
    if number <= 16:
        return Level.WARNING
    if number <= 20:
        return Level.ERROR
    return Level.CRITICAL


def _python_number(number: int) -> Level:
    for level in reversed(Level):
        if number >= level:
            return level
    return Level.DEBUG


def level_setting(name: str) -> Level:
    """A level named by a setting; a name that is not a level is a configuration error."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    value = getattr(settings, name)
    text = str(value).strip().lower()
    if text in _NAMES:
        return _NAMES[text]
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a level: use debug, info, warning, error or critical."
    )
