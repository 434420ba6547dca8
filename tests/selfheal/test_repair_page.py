"""The Self-heal page around a repair: Repair asks first (as Rollback does), with
htmx's confirm or, without JavaScript, a page of its own; and after a repair the
report shows the state the repair left, not the warnings it has just resolved."""

from __future__ import annotations

import re
from typing import Any

import pytest

from selfheal import engine
from selfheal.models import PlaybookExecution, TaskStatus
from selfheal.playbooks import checks, run_playbook
from selfheal.playbooks.checks import SystemResources
from tests.selfheal import make_task, make_worker, stored

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def steady_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks that read the machine give the same answer on every machine."""
    monkeypatch.setattr(checks, "ping_database", lambda: 1.0)
    monkeypatch.setattr(
        checks,
        "read_system_resources",
        lambda: SystemResources(
            disk_percent=40.0, disk_free_gb=50.0, memory_percent=30.0, load_1m=0.2, cpus=4
        ),
    )


INDEX = "/selfheal/"
REPAIR = "/selfheal/repair/"


def repair_form(html: str) -> str:
    match = re.search(r'<form[^>]*class="inline repair-form"[^>]*>', html)
    assert match is not None
    return match.group(0)


def test_the_repair_button_asks_before_it_posts(client: Any, operator: Any) -> None:
    client.force_login(operator)

    form = repair_form(client.get(INDEX).content.decode())

    assert 'hx-post="/selfheal/repair/"' in form
    assert 'hx-confirm="Run the repair playbook?' in form
    # Without JavaScript the form goes to the confirmation page, never straight to a repair.
    assert 'method="get"' in form


def test_without_javascript_repair_shows_a_confirmation_and_changes_nothing(
    client: Any, operator: Any
) -> None:
    task = engine.transition(make_task("Needs disk"), TaskStatus.BLOCKED, reason="no disk")
    client.force_login(operator)

    html = client.get(REPAIR).content.decode()

    assert "Repair now?" in html
    assert 'method="post" action="/selfheal/repair/"' in html
    assert 'id="repair-confirm-button"' in html
    assert not PlaybookExecution.objects.exists()
    assert stored(task).status == TaskStatus.BLOCKED


def test_the_confirmation_keeps_the_dry_run_choice(client: Any, operator: Any) -> None:
    client.force_login(operator)

    html = client.get(REPAIR, {"dry_run": "1"}).content.decode()

    assert "Run a repair dry run?" in html
    assert '<input type="hidden" name="dry_run" value="1">' in html


def test_confirming_runs_the_repair(client: Any, operator: Any) -> None:
    task = engine.transition(make_task("Needs disk"), TaskStatus.BLOCKED, reason="no disk")
    client.force_login(operator)

    response = client.post(REPAIR)

    assert response.status_code == 302
    assert PlaybookExecution.objects.get().playbook == "repair"
    assert stored(task).status == TaskStatus.PENDING


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_observer_can_neither_ask_nor_repair(client: Any, observer: Any, method: str) -> None:
    client.force_login(observer)

    assert getattr(client, method)(REPAIR).status_code == 403
    assert not PlaybookExecution.objects.exists()
    assert 'id="repair-button"' not in client.get(INDEX).content.decode()


# -- the report after a repair ---------------------------------------------------------------


def findings_list(html: str) -> str:
    start = html.index('id="report-findings"')
    return html[start : html.index("</ul>", start)]


def test_after_a_repair_the_report_shows_the_state_it_left(client: Any, operator: Any) -> None:
    make_worker("alive")  # the reset task then waits for a live worker: all is well
    engine.transition(make_task("Needs disk"), TaskStatus.BLOCKED, reason="no disk")
    run_playbook("diagnose", user=operator)
    execution = run_playbook("repair", user=operator)
    assert execution.worst_severity == "warning"  # what it found: one blocked task
    client.force_login(operator)

    html = client.get(INDEX).content.decode()

    findings = findings_list(html)
    queue = findings[findings.index('id="finding-task_queue"') :]
    assert queue.startswith('id="finding-task_queue"')
    assert 'class="sev-badge sev-ok">ok<' in queue.split("</li>")[0]
    assert "resolved: was warning" in queue.split("</li>")[0]
    assert "nothing blocked or stuck" in queue.split("</li>")[0]
    assert "After the repair" in html
    # What it found first is kept, apart and folded.
    assert 'id="before-repair"' in html
    assert 'id="report-severity">ok<' in html


def test_after_a_repair_the_history_row_says_what_it_left_and_what_it_found(
    client: Any, operator: Any
) -> None:
    make_worker("alive")
    engine.transition(make_task("Needs disk"), TaskStatus.BLOCKED, reason="no disk")
    execution = run_playbook("repair", user=operator)
    client.force_login(operator)

    html = client.get(INDEX).content.decode()
    row = html[html.index(f'id="execution-{execution.pk}"') :].split("</tr>")[0]

    assert execution.severity_now == "ok"
    assert 'sev-ok">ok<' in row
    assert "was warning" in row


def test_a_dry_run_shows_what_it_found(client: Any, operator: Any) -> None:
    engine.transition(make_task("Needs disk"), TaskStatus.BLOCKED, reason="no disk")
    execution = run_playbook("repair", user=operator, dry_run=True)
    client.force_login(operator)

    html = client.get(INDEX).content.decode()

    assert execution.severity_now == "warning"
    assert 'id="report-severity">warning<' in html
    assert "After the repair" not in html
    assert 'id="before-repair"' not in html


def test_a_repair_recorded_before_whole_findings_were_kept_still_shows_after(
    client: Any, operator: Any
) -> None:
    make_worker("alive")
    engine.transition(make_task("Needs disk"), TaskStatus.BLOCKED, reason="no disk")
    execution = run_playbook("repair", user=operator)
    verification = dict(execution.verification)
    del verification["findings"]
    PlaybookExecution.objects.filter(pk=execution.pk).update(verification=verification)
    client.force_login(operator)

    html = client.get(INDEX).content.decode()

    assert 'id="report-severity">ok<' in html
    assert "resolved: was warning" in html
