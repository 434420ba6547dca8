"""Forms in a live fragment post without a reload. A fragment pushed over a websocket
is rendered without a request, so it has no CSRF token field: htmx sends each form
instead, with the X-CSRFToken header every page puts on its <body>."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from controlplane.approvals import request_approval
from controlplane.consumers import _render_pending_approvals
from controlplane.models import Approval
from selfheal import engine
from selfheal.consumers import TEMPLATES, render_fragments
from tests.selfheal import expire_lease, make_task, make_worker

pytestmark = pytest.mark.django_db

FORM_TAG = re.compile(r"<form\b[^>]*>", re.S)
PAGE_CSRF_HEADER = re.compile(r"""<body hx-headers='\{"X-CSRFToken": "([^"]+)"\}'""")


def post_forms(html: str) -> list[str]:
    return [tag for tag in FORM_TAG.findall(html) if 'method="post"' in tag]


def test_every_form_of_every_live_fragment_is_sent_by_htmx(owner: Any, operator: Any) -> None:
    request_approval(action="routing.costly_call", requested_by=operator, reason="Deep research")
    worker, _ = make_worker()
    make_task()
    task = engine.claim(worker)
    assert task is not None
    expire_lease(task)  # a stuck task: Retry and Cancel on the Engine page

    # What /ws/home/ and /ws/selfheal/ send (chat's run fragments hold no form).
    live = {
        "home": _render_pending_approvals(owner),
        "selfheal": render_fragments(list(TEMPLATES), owner),
    }

    for name, html in live.items():
        forms = post_forms(html)
        assert forms, f"the {name} fragments rendered no form to check"
        for tag in forms:
            assert "hx-post=" in tag, f"{name}: {tag} posts without the page's CSRF header"


def test_an_approval_pushed_live_is_decided_with_the_pages_csrf_header(
    owner: Any, operator: Any
) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    home = browser.get("/").content.decode()
    approval = request_approval(
        action="routing.costly_call", requested_by=operator, reason="Deep research"
    )
    pushed = _render_pending_approvals(owner)
    header = PAGE_CSRF_HEADER.search(home)
    action = re.search(r'hx-post="([^"]+)"', pushed)
    assert header is not None
    assert action is not None

    response = browser.post(
        action.group(1),
        {"decision": "approve", "note": ""},
        headers={"X-CSRFToken": header.group(1), "HX-Request": "true"},
    )

    assert response.status_code == 200
    assert response["HX-Redirect"] == "/approvals/"
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert f"Approval #{approval.pk} approved." in browser.get("/approvals/").content.decode()


def test_without_htmx_the_decision_still_redirects_to_approvals(
    client: Any, owner: Any, operator: Any
) -> None:
    approval = request_approval(
        action="routing.costly_call", requested_by=operator, reason="Deep research"
    )
    client.force_login(owner)

    response = client.post(f"/approvals/{approval.pk}/decide/", {"decision": "reject"})

    assert response.status_code == 302
    assert response["Location"] == "/approvals/"
