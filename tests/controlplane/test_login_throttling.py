"""Password guessing is throttled (django-axes): after LOGIN_FAILURE_LIMIT failures an
account, and separately an address, is locked out for LOGIN_LOCKOUT_MINUTES, with a
page that says so; `manage.py unlock_login` lifts it sooner, in the audit trail."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY, authenticate
from django.core.management import call_command
from django.test import Client, RequestFactory

from controlplane.models import AuditEvent
from tests.personas import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def attempt(username: str, password: str, address: str = "203.0.113.7") -> Any:
    """One login from a browser at `address`, as a new visitor (no earlier session)."""
    browser = Client(REMOTE_ADDR=address)
    response = browser.post(LOGIN, {"username": username, "password": password})
    response.logged_in = SESSION_KEY in browser.session
    return response


def lock_out(username: str, address: str = "203.0.113.7") -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(username, "wrong", address)


def test_the_defaults_lock_after_ten_failures_for_half_an_hour_per_account_and_address() -> None:
    assert settings.AXES_FAILURE_LIMIT == 10
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 30 * 60
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]


def test_fifty_wrong_passwords_lock_the_account_and_the_right_one_is_then_refused(
    operator: Any,
) -> None:
    answers = [attempt(operator.username, f"guess-{n}").status_code for n in range(50)]

    limit = settings.AXES_FAILURE_LIMIT
    assert answers[: limit - 1] == [200] * (limit - 1)  # the form again, with its error
    assert set(answers[limit - 1 :]) == {429}
    right = attempt(operator.username, PASSWORD)
    assert right.status_code == 429
    assert not right.logged_in


def test_the_lockout_page_says_what_happened_and_what_to_do(operator: Any) -> None:
    lock_out(operator.username)

    response = attempt(operator.username, PASSWORD)

    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert "30 minutes" in page
    assert "bin/manage unlock_login" in page
    assert operator.username not in page  # nothing confirms which accounts exist


def test_a_locked_account_is_locked_from_every_address(operator: Any) -> None:
    for n in range(settings.AXES_FAILURE_LIMIT):
        attempt(operator.username, "wrong", address=f"198.51.100.{n + 1}")

    assert not attempt(operator.username, PASSWORD, address="192.0.2.200").logged_in


def test_an_address_guessing_many_accounts_is_locked_for_every_account(
    operator: Any, owner: Any
) -> None:
    for n in range(settings.AXES_FAILURE_LIMIT):
        attempt(f"someone-{n}", "wrong", address="203.0.113.9")

    assert not attempt(owner.username, PASSWORD, address="203.0.113.9").logged_in
    assert attempt(owner.username, PASSWORD, address="192.0.2.10").logged_in


def test_a_successful_login_forgets_the_earlier_typos(operator: Any) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(operator.username, "typo")
    assert attempt(operator.username, PASSWORD).logged_in

    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(operator.username, "typo")
    assert attempt(operator.username, PASSWORD).logged_in


def test_every_login_form_is_covered_the_admins_included(operator: Any) -> None:
    # The lockout is checked by the first authentication backend, so any form that
    # authenticates (the admin's login, a future one) is refused alike.
    lock_out(operator.username)
    request = RequestFactory().post("/admin/login/", REMOTE_ADDR="192.0.2.50")

    assert authenticate(request, username=operator.username, password=PASSWORD) is None


def test_unlock_login_lifts_an_accounts_lockout_and_is_audited(operator: Any) -> None:
    lock_out(operator.username)
    out = StringIO()

    call_command("unlock_login", operator.username, "--reason", "called the helpdesk", stdout=out)

    assert "Unlocked" in out.getvalue()
    assert attempt(operator.username, PASSWORD, address="192.0.2.200").logged_in
    event = AuditEvent.objects.get(action="login.unlocked")
    assert event.object_repr == operator.username
    assert event.after == {"username": operator.username, "reason": "called the helpdesk"}
    assert event.before["failures"] == settings.AXES_FAILURE_LIMIT


def test_unlock_login_lifts_an_addresss_lockout(operator: Any) -> None:
    for n in range(settings.AXES_FAILURE_LIMIT):
        attempt(f"someone-{n}", "wrong", address="203.0.113.7")
    assert not attempt(operator.username, PASSWORD, address="203.0.113.7").logged_in

    call_command("unlock_login", "203.0.113.7", "--reason", "office NAT", stdout=StringIO())

    assert attempt(operator.username, PASSWORD, address="203.0.113.7").logged_in
    event = AuditEvent.objects.filter(action="login.unlocked").latest("id")
    assert event.after == {"address": "203.0.113.7", "reason": "office NAT"}


def test_unlock_login_says_when_nothing_was_locked(operator: Any) -> None:
    out = StringIO()

    call_command("unlock_login", "nobody-locked", "--reason", "checking", stdout=out)

    assert "No failed logins on record for nobody-locked" in out.getvalue()
    assert AuditEvent.objects.filter(action="login.unlocked").count() == 1
