"""Test settings: the project's settings, with background work run inline."""

from __future__ import annotations

from controlplane.settings import *  # noqa: F403
from controlplane.settings import STORAGES

BACKGROUND_EAGER = True
EMBEDDED_SCHEDULER = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
NOTIFY_RETRY_BASE_SECONDS = 0.0
