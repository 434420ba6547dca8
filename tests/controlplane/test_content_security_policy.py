"""Content-Security-Policy on every page (Django's own middleware): scripts, styles
and connections from the site itself only, no framing; and templates that need no
more (no inline script, event handler, hx-on or style attribute)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings

from chat.models import ChatSession

pytestmark = pytest.mark.django_db

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def directives(response: Any) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


def assert_strict(response: Any) -> None:
    policy = directives(response)
    for name, value in POLICY.items():
        assert policy[name] == value, name
    assert "unsafe" not in response["Content-Security-Policy"]


def test_the_staff_pages_carry_the_policy(client: Any, owner: Any) -> None:
    chat = ChatSession.objects.create(user=owner, title="Policy")
    client.force_login(owner)

    for path in [
        "/",
        "/approvals/",
        "/toggles/",
        "/accounts/profile/",
        "/chat/",
        f"/chat/{chat.pk}/",
        "/routing/",
        "/selfheal/",
        "/selfheal/engine/",
        "/health/",
        "/admin/",
        "/admin/routing/route/add/",
        f"/admin/auth/user/{owner.pk}/change/",
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert_strict(response)


def test_the_pages_before_login_carry_it_too(client: Any, operator: Any) -> None:
    assert_strict(client.get("/accounts/login/"))
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": operator.username, "password": "wrong"})
    locked_out = client.post("/accounts/login/", {"username": operator.username, "password": "x"})
    assert locked_out.status_code == 429
    assert_strict(locked_out)


def test_an_error_page_carries_it(client: Any, owner: Any) -> None:
    client.force_login(owner)

    assert_strict(client.get("/chat/999999/"))


INLINE = {
    "an inline <script>": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
    "an event handler attribute": re.compile(r"\son[a-z]+\s*=", re.I),
    "an hx-on attribute (eval)": re.compile(r"\bhx-on[:-]", re.I),
    "a style attribute": re.compile(r"\sstyle\s*=", re.I),
    "a <style> element": re.compile(r"<style\b", re.I),
    "a javascript: URL": re.compile(r"javascript:", re.I),
}


COMMENT = re.compile(r"\{#.*?#\}|\{% comment %\}.*?\{% endcomment %\}", re.S)


def test_no_template_needs_more_than_the_policy_allows() -> None:
    found = [
        f"{template.relative_to(settings.BASE_DIR)}: {what}"
        for template in sorted((settings.BASE_DIR / "templates").rglob("*.html"))
        for what, pattern in INLINE.items()
        if pattern.search(COMMENT.sub("", template.read_text()))
    ]

    assert found == []


def test_htmx_injects_no_style_and_evaluates_nothing() -> None:
    base = (settings.BASE_DIR / "templates" / "base.html").read_text()

    config = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", base)
    assert config is not None
    assert '"includeIndicatorStyles": false' in config.group(1)
    assert '"allowEval": false' in config.group(1)
