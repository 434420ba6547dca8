"""Self-heal in the operator panel: tasks moved only through the engine, worker
tokens shown once and stored hashed, rules only Owners change (audited), and
executions and auto-heal runs that nobody rewrites."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.models import AuditEvent
from selfheal import engine
from selfheal.models import AutoHealRule, AutoHealRun, PlaybookExecution, Task, TaskStatus, Worker
from selfheal.models.engine import hash_token
from selfheal.playbooks import run_playbook
from tests.selfheal import expire_lease, make_task, make_worker, stored

pytestmark = pytest.mark.django_db

RAW_TOKEN = re.compile(r"cpw_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")
TASKS = "/admin/selfheal/task/"
WORKERS = "/admin/selfheal/worker/"
RULES = "/admin/selfheal/autohealrule/"
EXECUTIONS = "/admin/selfheal/playbookexecution/"
RUNS = "/admin/selfheal/autohealrun/"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def act(client: Any, url: str, action: str, objects: list[Any]) -> Any:
    return client.post(
        url, {"action": action, "_selected_action": [str(o.pk) for o in objects]}, follow=True
    )


# --- tasks -----------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_tier_sees_the_task_list_and_filters(client: Any, request: Any, persona: str) -> None:
    make_task()
    client.force_login(request.getfixturevalue(persona))

    response = client.get(TASKS)

    assert response.status_code == 200
    html = response.content.decode()
    for filter_name in ("status", "kind", "source"):
        assert f"?{filter_name}" in html or f"{filter_name}__exact" in html


def test_an_outsider_cannot_open_the_task_list(client: Any, outsider: Any) -> None:
    client.force_login(outsider)

    # The admin sends non-staff to its login, which refuses an outsider.
    assert client.get(TASKS, follow=True).status_code == 403


def test_nobody_edits_adds_or_deletes_a_task_in_the_admin(client: Any, owner: Any) -> None:
    task = make_task()
    client.force_login(owner)

    assert client.get(f"{TASKS}add/").status_code == 403
    client.post(f"{TASKS}{task.pk}/change/", {"title": "renamed", "status": "completed"})
    assert stored(task).title == "Rotate the keys"
    assert client.post(f"{TASKS}{task.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Task.objects.filter(pk=task.pk).exists()


def test_an_operator_retries_stuck_tasks_through_the_engine(client: Any, operator: Any) -> None:
    worker, _ = make_worker("alpha")
    make_task()
    task = engine.claim(worker)
    assert task is not None
    expire_lease(task)
    client.force_login(operator)

    response = act(client, TASKS, "retry", [task])

    assert stored(task).status == TaskStatus.PENDING
    assert "1 task(s) retried." in messages_of(response)
    assert AuditEvent.objects.filter(action="task.pending", actor=operator).exists()


def test_an_operator_cancels_tasks_and_invalid_moves_are_reported(
    client: Any, operator: Any
) -> None:
    open_task = make_task("open")
    done = engine.transition(make_task("done"), TaskStatus.CANCELLED)
    client.force_login(operator)

    response = act(client, TASKS, "cancel", [open_task, done])

    assert stored(open_task).status == TaskStatus.CANCELLED
    said = messages_of(response)
    assert "1 task(s) cancelled." in said
    assert any("cannot become cancelled" in m for m in said)


def test_an_observer_has_no_task_actions(client: Any, observer: Any) -> None:
    task = make_task()
    client.force_login(observer)

    response = client.get(TASKS)
    act(client, TASKS, "cancel", [task])

    assert 'value="cancel"' not in response.content.decode()
    assert stored(task).status == TaskStatus.PENDING


def test_the_task_list_reads_a_fixed_number_of_queries(client: Any, owner: Any) -> None:
    def grow(n: int) -> None:
        for i in range(n):
            worker, _ = make_worker(f"w{Worker.objects.count()}")
            make_task(f"t{i}")
            assert engine.claim(worker) is not None

    client.force_login(owner)
    grow(2)
    with CaptureQueriesContext(connection) as few:
        client.get(TASKS)
    grow(15)
    with CaptureQueriesContext(connection) as many:
        client.get(TASKS)

    assert len(many) == len(few)


# --- workers ----------------------------------------------------------------------------


def test_registering_a_worker_shows_its_token_once_and_stores_only_its_hash(
    client: Any, owner: Any
) -> None:
    client.force_login(owner)

    response = client.post(
        f"{WORKERS}add/", {"name": "builder", "capabilities": "deploy, playbook.run"}
    )

    worker = Worker.objects.get(name="builder")
    assert worker.capabilities == ["deploy", "playbook.run"]
    # On the page answering the POST itself, never in a cookie (Django's messages
    # cookie is signed, not encrypted).
    assert response.status_code == 200
    page = response.content.decode()
    assert "shown only once" in page
    match = RAW_TOKEN.search(page)
    assert match is not None
    raw = match.group(0)
    assert all(raw not in cookie.value for cookie in client.cookies.values())
    assert "CONTROLPLANE_WORKER_TOKEN" in page
    assert worker.token_hash == hash_token(raw)
    assert raw not in str(Worker.objects.filter(pk=worker.pk).values().get())
    assert Worker.authenticate(raw) == worker
    # Never again: not on the change page nor in the list.
    assert raw not in client.get(f"{WORKERS}{worker.pk}/change/").content.decode()
    assert raw not in client.get(WORKERS).content.decode()


def test_a_workers_token_hash_is_redacted_in_the_audit_trail(client: Any, owner: Any) -> None:
    client.force_login(owner)

    client.post(f"{WORKERS}add/", {"name": "builder", "capabilities": "deploy"})

    worker = Worker.objects.get(name="builder")
    [event] = AuditEvent.objects.filter(action="worker.created", object_id=str(worker.pk))
    assert event.after["token_hash"] == "[redacted]"
    assert worker.token_hash not in str([[e.before, e.after] for e in AuditEvent.objects.all()])


def test_an_owner_revokes_a_worker_and_its_tasks_go_back_to_the_queue(
    client: Any, owner: Any
) -> None:
    worker, raw = make_worker("alpha")
    make_task()
    task = engine.claim(worker)
    assert task is not None
    client.force_login(owner)

    response = act(client, WORKERS, "revoke", [worker])

    worker.refresh_from_db()
    assert worker.revoked_at is not None
    assert worker.status == Worker.Status.OFFLINE
    assert Worker.authenticate(raw) is None
    assert stored(task).status == TaskStatus.PENDING
    assert "1 worker(s) revoked" in " ".join(messages_of(response))


def test_workers_are_never_deleted_and_operators_cannot_register_or_revoke(
    client: Any, owner: Any, operator: Any
) -> None:
    worker, raw = make_worker("alpha")
    client.force_login(owner)
    assert client.post(f"{WORKERS}{worker.pk}/delete/", {"post": "yes"}).status_code == 403

    client.force_login(operator)
    assert client.get(f"{WORKERS}add/").status_code == 403
    act(client, WORKERS, "revoke", [worker])

    assert Worker.authenticate(raw) == worker


def test_the_worker_list_reads_a_fixed_number_of_queries(client: Any, observer: Any) -> None:
    client.force_login(observer)
    for i in range(2):
        make_worker(f"a{i}")
    with CaptureQueriesContext(connection) as few:
        assert client.get(WORKERS).status_code == 200
    for i in range(15):
        make_worker(f"b{i}")
    with CaptureQueriesContext(connection) as many:
        assert client.get(WORKERS).status_code == 200

    assert len(many) == len(few)


# --- auto-heal rules ------------------------------------------------------------------------


RULE_FORM = {
    "name": "stuck queue",
    "finding": "task_queue",
    "severity": "critical",
    "playbook": "repair",
    "cooldown_minutes": "30",
    "target_cooldown_minutes": "60",
    "max_runs_per_hour": "3",
    "enabled": "on",
}


def test_an_owner_adds_a_rule_and_the_change_is_audited(client: Any, owner: Any) -> None:
    client.force_login(owner)

    client.post(f"{RULES}add/", RULE_FORM)

    rule = AutoHealRule.objects.get(name="stuck queue")
    event = AuditEvent.objects.get(action="autohealrule.created", object_id=str(rule.pk))
    assert event.actor == owner
    history = client.get(f"{RULES}{rule.pk}/history/").content.decode()
    assert "autohealrule.created" in history


def test_a_rule_on_an_unknown_check_or_playbook_is_refused(client: Any, owner: Any) -> None:
    client.force_login(owner)

    response = client.post(
        f"{RULES}add/", {**RULE_FORM, "finding": "moon_phase", "playbook": "reboot"}
    )

    assert response.status_code == 200
    assert not AutoHealRule.objects.filter(name="stuck queue").exists()


@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_only_owners_change_rules(client: Any, request: Any, persona: str) -> None:
    rule = AutoHealRule.objects.create(name="mine", finding="task_queue")
    client.force_login(request.getfixturevalue(persona))

    assert client.get(RULES).status_code == 200
    client.post(f"{RULES}{rule.pk}/change/", {**RULE_FORM, "name": "theirs"})
    assert client.get(f"{RULES}add/").status_code == 403

    rule.refresh_from_db()
    assert rule.name == "mine"


@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_it_shows_a_rule_read_only_to_those_who_cannot_change_it(
    client: Any, request: Any, persona: str
) -> None:
    rule = AutoHealRule.objects.create(name="mine", finding="task_queue", playbook="repair")
    client.force_login(request.getfixturevalue(persona))

    response = client.get(f"{RULES}{rule.pk}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="playbook"' not in html  # shown as text, not a field to change
    assert "repair" in html
    assert 'name="_save"' not in html


# --- history: executions and runs ---------------------------------------------------------


def test_executions_are_read_only_with_their_record_pretty_printed(client: Any, owner: Any) -> None:
    execution = run_playbook("diagnose", user=owner)
    client.force_login(owner)

    html = client.get(f"{EXECUTIONS}{execution.pk}/change/").content.decode()

    assert '<pre class="json">' in html
    assert "&quot;check&quot;: &quot;database&quot;" in html
    assert client.get(f"{EXECUTIONS}add/").status_code == 403
    client.post(f"{EXECUTIONS}{execution.pk}/change/", {"summary": "rewritten"})
    assert PlaybookExecution.objects.get(pk=execution.pk).summary != "rewritten"
    assert client.post(f"{EXECUTIONS}{execution.pk}/delete/", {"post": "yes"}).status_code == 403


def test_auto_heal_runs_are_read_only(client: Any, owner: Any) -> None:
    rule = AutoHealRule.objects.create(name="r", finding="task_queue")
    run = AutoHealRun.objects.create(rule=rule, target="check:task_queue")
    client.force_login(owner)

    assert client.get(RUNS).status_code == 200
    assert client.post(f"{RUNS}{run.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AutoHealRun.objects.filter(pk=run.pk).exists()


def test_the_execution_list_reads_a_fixed_number_of_queries(client: Any, operator: Any) -> None:
    client.force_login(operator)
    for _ in range(2):
        run_playbook("diagnose", user=operator)
    with CaptureQueriesContext(connection) as few:
        assert client.get(EXECUTIONS).status_code == 200
    for _ in range(12):
        run_playbook("diagnose", user=operator)
    with CaptureQueriesContext(connection) as many:
        assert client.get(EXECUTIONS).status_code == 200

    assert len(many) == len(few)


def test_the_sections_place_self_heal_models(client: Any, observer: Any) -> None:
    client.force_login(observer)

    sections = {
        section["name"]: [m["object_name"] for m in section["models"]]
        for section in client.get("/admin/").context["app_list"]
    }

    assert {"Task", "Worker", "AutoHealRule"} <= set(sections["Control"])
    assert {"PlaybookExecution", "AutoHealRun"} <= set(sections["Observability"])
