"""Every task the product creates has someone to do it: a worker that executes its
kind, or a person (a declared person's kind, which no worker claims and the diagnosis
does not count as stuck). A task says what it waits for."""

from __future__ import annotations

import ast
import importlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.utils import timezone

from chat import tools
from chat.tools import ToolContext, ToolRefused, checked_tool
from healthmon.code_findings import FIX_CODE_TASK_KIND
from selfheal import engine, task_kinds, unblock
from selfheal.models import Task, TaskStatus
from selfheal.playbooks.checks import check_task_queue, check_worker_heartbeats
from selfheal.playbooks.executor import FIX_TASK_KIND
from tests.selfheal import make_task, make_worker, stored

ROOT = Path(settings.BASE_DIR)
NOT_PRODUCT = {".venv", "tests", "node_modules", ".tools", "migrations", "docs", "var"}


def product_modules() -> list[tuple[str, ast.Module]]:
    modules = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if NOT_PRODUCT & set(parts) or parts[0].startswith("."):
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules.append((name.removesuffix(".__init__"), ast.parse(path.read_text())))
    return modules


def kinds_of(expression: ast.expr, module: str, tree: ast.Module) -> list[str]:
    """The kinds a `create_task` call's kind argument can be: constants, module names
    (read from the module), local names (what the module assigns them) and the literal
    fallbacks of an `x or "kind"`. What the caller takes from its input (a model's
    arguments) is checked where it is taken."""
    if isinstance(expression, ast.Constant):
        return [str(expression.value)]
    if isinstance(expression, ast.BoolOp):
        return [kind for value in expression.values for kind in kinds_of(value, module, tree)]
    namespace = vars(importlib.import_module(module))
    if isinstance(expression, ast.Name) and expression.id not in namespace:
        return [
            kind
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == expression.id for t in node.targets)
            for kind in kinds_of(node.value, module, tree)
        ]
    if isinstance(expression, ast.Name | ast.Attribute):
        return [str(eval(ast.unparse(expression), namespace))]  # noqa: S307
    return []


def created_kinds() -> dict[str, list[str]]:
    """Every kind passed to `create_task(...)` in the product, by module."""
    found: dict[str, list[str]] = {}
    for module, tree in product_modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name != "create_task" or module == "selfheal.engine":
                continue
            argument = next((k.value for k in node.keywords if k.arg == "kind"), None)
            if argument is None and len(node.args) > 1:
                argument = node.args[1]
            if argument is not None:
                found.setdefault(module, []).extend(kinds_of(argument, module, tree))
    return found


def test_the_product_creates_tasks_in_the_places_this_test_knows():
    # A new place that creates tasks fails here first: give its kind a doer, then add it.
    assert set(created_kinds()) == {
        "chat.tools",
        "healthmon.code_findings",
        "healthmon.fix_tasks",
        "selfheal.playbooks.executor",
    }


def test_every_kind_the_product_creates_has_a_worker_or_a_person_to_do_it():
    kinds = {kind for found in created_kinds().values() for kind in found}

    assert {"chat.request", FIX_TASK_KIND, FIX_CODE_TASK_KIND} <= kinds
    assert [kind for kind in sorted(kinds) if not task_kinds.has_a_doer(kind)] == []


def test_the_work_no_machine_can_do_is_declared_a_persons():
    assert {"chat.request", FIX_TASK_KIND, FIX_CODE_TASK_KIND} <= set(task_kinds.person_kinds())
    assert not set(task_kinds.person_kinds()) & set(task_kinds.known_kinds())


# -- the chat tool -------------------------------------------------------------------------


def call_create_task(arguments: dict[str, Any], user: Any) -> Any:
    tool = checked_tool("create_task", arguments)
    return tools.run_tool(tool, arguments, ToolContext(run_id=7, user=user))


@pytest.mark.django_db
def test_a_task_from_chat_is_a_to_do_that_says_it_waits_for_a_person(operator):
    created = call_create_task({"title": "Look into the nightly backup"}, operator)

    task = Task.objects.get(pk=created["id"])
    assert task.kind == "chat.request"
    assert task.for_a_person
    assert created["waiting_for"] == task.waiting_for
    assert task.waiting_for.startswith("a person")


@pytest.mark.django_db
def test_chat_may_create_a_task_a_worker_executes(operator):
    created = call_create_task(
        {"title": "Diagnose", "kind": "playbook.run", "payload": {"playbook": "diagnose"}},
        operator,
    )

    assert created["kind"] == "playbook.run"
    assert created["waiting_for"].startswith("a worker")


@pytest.mark.django_db
def test_chat_may_not_create_a_kind_nobody_does(operator):
    with pytest.raises(ToolRefused, match="No worker or person does tasks of kind 'deploy'"):
        call_create_task({"title": "Deploy", "kind": "deploy"}, operator)

    assert not Task.objects.exists()


# -- workers, the diagnosis and the unblock router leave a person's to-do alone -------------


@pytest.mark.django_db
def test_no_worker_claims_a_persons_to_do_whatever_kinds_it_asks_for():
    make_task("Look into it", "chat.request")
    worker, _ = make_worker("any-kind")

    assert engine.claim(worker) is None
    assert engine.claim(worker, kinds=["chat.request"]) is None


def aged(task: Task, hours: float) -> Task:
    then = timezone.now() - timedelta(hours=hours)
    Task.objects.filter(pk=task.pk).update(created_at=then, updated_at=then)
    return stored(task)


@pytest.mark.django_db
def test_a_persons_to_do_waiting_for_hours_with_no_worker_is_not_stuck():
    aged(make_task("Look into it", "chat.request"), hours=5)
    aged(make_task("Fix the error", FIX_TASK_KIND), hours=5)
    now = timezone.now()

    queue = check_task_queue(now)
    assert queue.severity == "ok"
    assert queue.evidence["pending"] == 0
    assert queue.evidence["waiting_for_a_person"] == 2
    assert "2 to-do(s) wait for a person" in queue.summary
    assert check_worker_heartbeats(now).severity == "ok"


@pytest.mark.django_db
def test_a_workers_task_waiting_as_long_is_still_critical():
    aged(make_task("Diagnose", "playbook.run"), hours=5)

    assert check_task_queue(timezone.now()).severity == "critical"


@pytest.mark.django_db
def test_the_unblock_router_asks_nobody_about_a_persons_to_do(settings):
    settings.UNBLOCK_AFTER_SECONDS = 60
    aged(make_task("Look into it", "chat.request"), hours=1)

    assert unblock.route_unclaimable_tasks() == []


# -- what a task waits for, and marking a to-do done ---------------------------------------


@pytest.mark.django_db
def test_a_task_says_what_it_waits_for_in_each_status():
    worker, _ = make_worker("w-1")
    external = make_task("Deploy", "deploy", required_capabilities=["deploy"])
    assert external.waiting_for == (
        "an external worker that executes deploy with capabilities deploy"
    )
    running = make_task("Echo", "echo")
    claimed = engine.claim(worker)
    assert claimed is not None
    assert claimed.pk == running.pk
    assert Task.objects.select_related("lease_worker").get(pk=running.pk).waiting_for == (
        "w-1 to finish it"
    )
    blocked = engine.transition(make_task("Disk"), TaskStatus.BLOCKED, reason="No disk left.")
    assert blocked.waiting_for == "No disk left."
    held = engine.transition(make_task("Ask"), TaskStatus.WAITING_APPROVAL)
    assert held.waiting_for == "an approval decision"
    assert engine.transition(make_task("Gone"), TaskStatus.CANCELLED).waiting_for == ""


@pytest.mark.django_db
def test_an_operator_marks_a_to_do_done(client, operator):
    task = make_task("Look into it", "chat.request")
    client.force_login(operator)

    response = client.post(f"/selfheal/tasks/{task.pk}/done/")

    assert response.status_code == 302
    assert stored(task).status == TaskStatus.COMPLETED
    assert stored(task).finished_at is not None


@pytest.mark.django_db
def test_a_workers_task_cannot_be_marked_done_by_a_person(client, operator):
    task = make_task("Diagnose", "playbook.run")
    client.force_login(operator)

    response = client.post(f"/selfheal/tasks/{task.pk}/done/")

    assert stored(task).status == TaskStatus.PENDING
    said = [str(message) for message in get_messages(response.wsgi_request)]
    assert any("completes when a worker does it" in line for line in said)


@pytest.mark.django_db
def test_an_observer_cannot_mark_a_to_do_done(client, observer):
    task = make_task("Look into it", "chat.request")
    client.force_login(observer)

    assert client.post(f"/selfheal/tasks/{task.pk}/done/").status_code == 403
    assert stored(task).status == TaskStatus.PENDING


@pytest.mark.django_db
def test_the_engine_page_lists_to_dos_with_done_for_an_operator_only(client, operator, observer):
    make_task("Look into the backup", "chat.request")

    client.force_login(operator)
    html = client.get("/selfheal/engine/").content.decode()
    assert "Waiting for a person" in html
    assert "Look into the backup" in html
    assert "done-button" in html

    client.force_login(observer)
    html = client.get("/selfheal/engine/").content.decode()
    assert "Look into the backup" in html
    assert "done-button" not in html


@pytest.mark.django_db
def test_the_admin_shows_what_a_task_waits_for(client, observer):
    task = make_task("Look into the backup", "chat.request")
    client.force_login(observer)

    html = client.get(f"/admin/selfheal/task/{task.pk}/change/").content.decode()

    assert "Waiting for" in html
    assert task_kinds.waiting_for("chat.request") in html
