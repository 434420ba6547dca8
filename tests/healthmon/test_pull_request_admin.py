"""Code health's pull requests in the admin: read-only under Observability, each
linking to its approval and to GitHub."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.approvals import request_approval
from controlplane.service_accounts import service_account
from healthmon.models import PullRequest, Repository
from tests.healthmon.test_admin import sections

pytestmark = pytest.mark.django_db

PULL_REQUESTS = "/admin/healthmon/pullrequest/"


def an_open_pull_request(number: int = 7) -> PullRequest:
    repository, _ = Repository.objects.get_or_create(
        name="app", defaults={"kind": "github", "full_name": "octo-org/app"}
    )
    pull_request = PullRequest.objects.create(
        repository=repository,
        status=PullRequest.Status.OPEN,
        base="main",
        branch=f"codehealth/fixes-20261203-{number}",
        title="Code health: mechanical fixes for abcdef12",
        body="| app.py:1 | F401 | `os` imported but unused | finding #1 |\n",
        number=number,
        url=f"https://github.example/octo-org/app/pull/{number}",
        opened_at=timezone.now(),
    )
    pull_request.approval = request_approval(
        action="healthmon.open_pull_request",
        requested_by=service_account("codehealth"),
        reason="Open the fixes",
        subject=pull_request,
        ttl=timedelta(hours=1),
    )
    pull_request.save()
    return pull_request


def test_pull_requests_are_listed_under_observability_with_their_links(
    client: Any, observer: Any
) -> None:
    pull_request = an_open_pull_request()
    client.force_login(observer)

    assert "PullRequest" in sections(client)["Observability"]
    listing = client.get(PULL_REQUESTS).content.decode()
    approval_url = f"/admin/controlplane/approval/{pull_request.approval_id}/change/"
    assert f'<a href="{approval_url}">#{pull_request.approval_id} pending</a>' in listing
    assert f'href="{pull_request.url}"' in listing
    detail = client.get(f"{PULL_REQUESTS}{pull_request.pk}/change/").content.decode()
    assert pull_request.branch in detail
    assert "finding #1" in detail


def test_nobody_changes_a_pull_request_through_the_admin(client: Any, owner: Any) -> None:
    pull_request = an_open_pull_request()
    client.force_login(owner)

    assert client.get(f"{PULL_REQUESTS}add/").status_code == 403
    client.post(f"{PULL_REQUESTS}{pull_request.pk}/change/", {"status": "merged"})
    pull_request.refresh_from_db()
    assert pull_request.status == PullRequest.Status.OPEN


def test_the_list_costs_the_same_queries_for_more_pull_requests(client: Any, observer: Any) -> None:
    client.force_login(observer)
    an_open_pull_request()
    with CaptureQueriesContext(connection) as one:
        assert client.get(PULL_REQUESTS).status_code == 200
    an_open_pull_request(8)
    an_open_pull_request(9)

    with CaptureQueriesContext(connection) as three:
        assert client.get(PULL_REQUESTS).status_code == 200

    assert len(three) == len(one)
