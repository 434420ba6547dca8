"""The Code health page's websocket: who may connect, and the fragments a scan's
moves and progress bring (the repository's row while it runs; the findings and what
is new once it ends), and those a pull request's change brings.

Transactional tests: scans publish on commit, and the consumer reads the database
from other threads, which must see committed rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connections
from django.utils import timezone

from controlplane.asgi import application
from controlplane.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from healthmon import code_scans
from healthmon.code_consumers import CODE_HEALTH_GROUP, CodeHealthConsumer
from healthmon.models import Finding, PullRequest, Repository, Scan
from tests.controlplane.test_consumer import GOOD_ORIGIN, SITE_HOST, session_cookie

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

HANG_GUARD = 30
PATH = "/ws/health/code/"


@pytest_asyncio.fixture(autouse=True)
async def _close_connections_of_the_sync_thread() -> AsyncIterator[None]:
    yield
    await sync_to_async(connections.close_all)()


class QuietConsumer(CodeHealthConsumer):
    """Renders only for events (no look of its own in the middle of a test)."""

    catch_up_seconds = 3600.0


async def connect(user: Any, query: str = "") -> Any:
    communicator = WebsocketCommunicator(QuietConsumer.as_asgi(), f"{PATH}?{query}")
    communicator.scope["user"] = user
    connected, code = await communicator.connect(timeout=HANG_GUARD)
    return communicator, connected, code


async def receive_containing(communicator: Any, text: str) -> str:
    while True:
        html = await communicator.receive_from(timeout=HANG_GUARD)
        if text in html:
            return html


async def test_staff_connect_through_the_whole_stack(client: Any, observer: Any) -> None:
    cookie = await sync_to_async(session_cookie)(client, observer)
    communicator = WebsocketCommunicator(
        application, PATH, headers=[SITE_HOST, (b"origin", GOOD_ORIGIN), (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect(timeout=HANG_GUARD)
    assert connected
    await communicator.disconnect()


@pytest.mark.parametrize("origin", [b"http://evil.example", b"https://localhost:8000"])
async def test_a_foreign_origin_is_refused_even_for_staff(
    client: Any, owner: Any, origin: bytes
) -> None:
    cookie = await sync_to_async(session_cookie)(client, owner)
    communicator = WebsocketCommunicator(
        application, PATH, headers=[SITE_HOST, (b"origin", origin), (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect(timeout=HANG_GUARD)
    assert not connected


async def test_anonymous_visitors_and_outsiders_are_refused(outsider: Any) -> None:
    _, connected, code = await connect(AnonymousUser())
    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
    _, connected, code = await connect(outsider)
    assert not connected
    assert code == CLOSE_FORBIDDEN


async def test_a_scan_change_and_a_pull_request_are_announced_on_commit(
    published: list[tuple[str, dict[str, Any]]],
) -> None:
    def announce() -> Repository:
        repository = Repository.objects.create(name="shop", path="/nowhere")
        scan = Scan.objects.create(repository=repository)
        code_scans.scan_changed.send(sender=Scan, scan=scan)
        PullRequest.objects.create(repository=repository, base="main", branch="b", title="Fix")
        return repository

    repository = await database_sync_to_async(announce)()

    message = {"type": "code.changed", "repository": repository.pk}
    assert published == [(CODE_HEALTH_GROUP, message), (CODE_HEALTH_GROUP, message)]


def _start(repository: Repository) -> Scan:
    scan = code_scans.queue_scan(repository)
    code_scans._move(scan, Scan.Status.RUNNING, files_total=10)
    return scan


def _progress(scan: Scan) -> None:
    """As a scan's progress write: the row and the signal."""
    Scan.objects.filter(pk=scan.pk).update(files_scanned=3, progress={"ruff": [3, 10]})
    scan.files_scanned, scan.progress = 3, {"ruff": [3, 10]}
    code_scans.scan_changed.send(sender=Scan, scan=scan)


def _succeed(scan: Scan) -> Finding:
    now = timezone.now()
    found = Finding.objects.create(
        repository=scan.repository,
        check_name="ruff",
        rule="F401",
        identity="abc",
        severity=Finding.Severity.HIGH,
        message="`os` imported <but> unused",
        file="app.py",
        line=1,
        first_seen_scan=scan,
        last_seen_scan=scan,
        first_seen_at=now,
        last_seen_at=now,
    )
    code_scans._move(
        scan,
        Scan.Status.SUCCEEDED,
        files_scanned=10,
        summary={"ruff": {"reported": 1, "new": 1, "open": 0, "fixed": 0, "intended": 0}},
        score=8,
    )
    return found


async def test_a_running_scan_sends_its_row_with_progress_then_its_findings(
    observer: Any,
) -> None:
    repository = await database_sync_to_async(Repository.objects.create)(
        name="shop", path="/nowhere"
    )
    communicator, connected, _ = await connect(observer)
    assert connected

    scan = await database_sync_to_async(_start)(repository)
    html = await receive_containing(communicator, "running")
    assert html.lstrip().startswith(f'<tr id="repo-{repository.pk}"')
    assert 'hx-swap-oob="true"' in html
    assert "0 of 10 files" in html

    await database_sync_to_async(_progress)(scan)
    html = await receive_containing(communicator, "3 of 10 files")
    assert f'id="repo-{repository.pk}-check-ruff"><code>ruff</code> 3 / 10<' in html

    found = await database_sync_to_async(_succeed)(scan)
    row = await receive_containing(communicator, f'id="repo-{repository.pk}-score">8<')
    assert "succeeded" in row
    findings = await receive_containing(communicator, 'id="code-findings"')
    assert f'id="finding-{found.pk}"' in findings
    assert "`os` imported &lt;but&gt; unused" in findings
    new = await receive_containing(communicator, 'id="code-new"')
    assert f'id="new-{found.pk}"' in new
    await communicator.disconnect()


async def test_the_findings_sent_keep_the_pages_filters(observer: Any) -> None:
    repository = await database_sync_to_async(Repository.objects.create)(
        name="shop", path="/nowhere"
    )
    communicator, _, _ = await connect(observer, "status=fixed")

    def scan_and_finish() -> None:
        _succeed(_start(repository))

    await database_sync_to_async(scan_and_finish)()

    findings = await receive_containing(communicator, 'id="code-findings"')
    assert "No finding matches these filters." in findings
    await communicator.disconnect()


async def test_a_new_pull_request_sends_the_pull_requests_section(observer: Any) -> None:
    repository = await database_sync_to_async(Repository.objects.create)(
        name="shop", path="/nowhere"
    )
    communicator, _, _ = await connect(observer)

    await database_sync_to_async(PullRequest.objects.create)(
        repository=repository, base="main", branch="fix", title="Remove <unused> imports"
    )

    html = await receive_containing(communicator, 'id="code-pull-requests"')
    assert 'hx-swap-oob="true"' in html
    assert "Remove &lt;unused&gt; imports" in html
    assert "Waiting for approval" in html
    await communicator.disconnect()


class EagerLook(CodeHealthConsumer):
    catch_up_seconds = 0.05


async def test_a_change_the_layer_never_told_is_found_by_the_connections_own_look(
    observer: Any,
) -> None:
    repository = await database_sync_to_async(Repository.objects.create)(
        name="shop", path="/nowhere"
    )
    communicator = WebsocketCommunicator(EagerLook.as_asgi(), PATH)
    communicator.scope["user"] = observer
    await communicator.connect(timeout=HANG_GUARD)

    # Written as another process would, without an event reaching this one.
    await database_sync_to_async(Scan.objects.create)(
        repository=repository, status=Scan.Status.RUNNING, files_total=4, files_scanned=1
    )

    html = await receive_containing(communicator, "1 of 4 files")
    assert f'<tr id="repo-{repository.pk}"' in html
    await communicator.disconnect()


async def test_a_repository_added_after_the_page_loaded_gets_its_row_at_the_end(
    observer: Any,
) -> None:
    communicator, _, _ = await connect(observer)

    def add_and_scan() -> Repository:
        repository = Repository.objects.create(name="newcomer", path="/nowhere")
        _start(repository)
        return repository

    repository = await database_sync_to_async(add_and_scan)()

    html = await receive_containing(communicator, f'<tr id="repo-{repository.pk}"')
    assert html.lstrip().startswith('<tbody hx-swap-oob="beforeend:#code-repositories">')
    assert "<strong>newcomer</strong>" in html
    await communicator.disconnect()
