from __future__ import annotations

from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.auth import get_user
from django.test import RequestFactory

from benchmarks.events import logged_in_session

pytestmark = pytest.mark.django_db


def test_the_benchmark_session_logs_its_user_in_through_the_configured_backend(owner):
    store = logged_in_session(owner)
    request = RequestFactory().get("/")
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(store.session_key)

    assert get_user(request) == owner
