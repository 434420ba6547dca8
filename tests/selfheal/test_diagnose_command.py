from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from selfheal.models import PlaybookExecution, Task, TaskStatus
from selfheal.playbooks import checks
from selfheal.playbooks.checks import SystemResources

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


def blocked(count: int) -> list[Task]:
    return [
        Task.objects.create(title=f"t{n}", kind="noop", status=TaskStatus.BLOCKED)
        for n in range(count)
    ]


def run_command(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command(*args, stdout=out, no_color=True)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_diagnose_exits_0_when_everything_is_ok():
    code, out = run_command("diagnose")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[1] for line in lines[:6]] == list(checks.CHECKS)
    assert all(line.startswith("OK") for line in lines[:6])
    assert "-> None needed." in lines[0]
    assert lines[-1].startswith("Worst: ok (execution #")
    assert PlaybookExecution.objects.get().trigger == PlaybookExecution.Trigger.COMMAND


def test_diagnose_exits_1_on_a_warning_and_prints_evidence_and_the_suggested_action():
    blocked(1)
    code, out = run_command("diagnose")
    assert code == 1
    queue = next(line for line in out.splitlines() if " task_queue " in line)
    assert queue.startswith("WARNING")
    assert "blocked=1" in queue
    assert "-> Run repair" in queue


def test_diagnose_exits_2_on_a_critical_finding():
    blocked(checks.QUEUE_BLOCKED_CRITICAL)
    code, out = run_command("diagnose")
    assert code == 2
    assert "Worst: critical" in out


def test_diagnose_prints_json_on_request_with_the_same_exit_code():
    blocked(1)
    code, out = run_command("diagnose", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["worst"] == "warning"
    assert [f["check"] for f in report["findings"]] == list(checks.CHECKS)
    queue = next(f for f in report["findings"] if f["check"] == "task_queue")
    assert queue["evidence"]["blocked"] == 1
    assert queue["suggested_action"].startswith("Run repair")


def test_repair_dry_run_prints_what_it_would_do_and_changes_nothing():
    tasks = blocked(2)
    code, out = run_command("repair", "--dry-run")
    assert code == 0
    assert "Actions (would do):" in out
    assert f"[would] Would reset task #{tasks[0].pk}" in out
    assert "Dry run: nothing was changed" in out
    assert set(Task.objects.values_list("status", flat=True)) == {TaskStatus.BLOCKED}


def test_repair_prints_findings_actions_and_what_improved():
    tasks = blocked(2)
    code, out = run_command("repair")
    assert code == 0
    assert out.index("Findings:") < out.index("Actions:") < out.index("Verification:")
    assert f"[done] Reset task #{tasks[0].pk}" in out
    queue = next(line for line in out.splitlines() if "task_queue        warning" in line)
    assert "warning -> ok (improved)" in queue
    assert "pending 0->2" in queue
    assert "blocked 2->0" in queue
    assert set(Task.objects.values_list("status", flat=True)) == {TaskStatus.PENDING}
