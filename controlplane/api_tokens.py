"""API tokens for machines (service keys, worker tokens): shown once, stored hashed.

A token reads `<prefix><lookup>_<secret>`. The lookup finds the row without a scan;
only the SHA-256 of the whole token is stored (the secret has 256 bits, so a fast
hash is enough), and it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import secrets


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_token(prefix: str) -> tuple[str, str, str]:
    """A new token: (lookup, raw token to show once, digest to store)."""
    lookup = secrets.token_hex(6)
    raw = f"{prefix}{lookup}_{secrets.token_urlsafe(32)}"
    return lookup, raw, digest(raw)


def lookup_of(raw: str, prefix: str) -> str | None:
    """The lookup part of a token of this kind, or None when it is not one."""
    if not raw.startswith(prefix) or "_" not in raw[len(prefix) :]:
        return None
    return raw[len(prefix) :].split("_", 1)[0]


def matches(stored_digest: str, raw: str) -> bool:
    return secrets.compare_digest(stored_digest, digest(raw))
