"""Secrets at rest: a text field encrypted with Fernet keys from settings.

`ENCRYPTION_KEYS` holds one or more keys; the first encrypts, any decrypts, so keys
can be rotated in. Values never appear in `repr`, logs or audit snapshots.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError(
            "A secret could not be decrypted: ENCRYPTION_KEYS does not hold the key it was "
            "encrypted with."
        ) from exc


def mask(secret: str, visible: int = 4) -> str:
    """What a person may see of a secret: its last few characters."""
    if not secret:
        return ""
    return "•" * 8 + secret[-visible:] if len(secret) > visible * 3 else "•" * 8


# How a serialized secret (`dumpdata`) is marked: its ciphertext follows.
SERIALIZED_PREFIX = "fernet:"


class EncryptedTextField(models.TextField):
    """A TextField stored encrypted; reads return plaintext. Not queryable by value.

    Serialized (`dumpdata`), a value is its ciphertext, marked with SERIALIZED_PREFIX:
    a dump holds no secret, and `loaddata` reads it back with the same keys."""

    audit_redacted = True

    def value_to_string(self, obj: Any) -> str:
        value = self.value_from_object(obj)
        return f"{SERIALIZED_PREFIX}{encrypt(str(value))}" if value else ""

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if isinstance(value, str) and value.startswith(SERIALIZED_PREFIX):
            try:
                return decrypt(value.removeprefix(SERIALIZED_PREFIX))
            except ValueError as exc:
                raise ValidationError(str(exc), code="undecryptable") from exc
        return value

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)
