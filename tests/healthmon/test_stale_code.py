from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from chat.models import ToolExecution
from controlplane.models import AuditEvent
from healthmon import code_checkout, code_findings
from healthmon.code_checks import ScanContext, stale
from healthmon.code_checks.stale import history
from healthmon.code_scans import scan_repository
from healthmon.models import Finding, Repository, Scan
from tests.chat.runs import make_run
from tests.healthmon.code_repos import commit, make_repository

HELPERS = '''"""Helpers."""


def used_helper():
    return 1


def unused_helper():
    return 2
'''
VIEWS = """from django.shortcuts import redirect, render
from django.urls import reverse

from pkg.helpers import used_helper


def index(request):
    return render(request, "pkg/index.html", {"value": used_helper()})


def page(request):
    return redirect(reverse("pkg:detail"))
"""
URLS = """from django.urls import path

from pkg import views

app_name = "pkg"
urlpatterns = [
    path("", views.index, name="index"),
    path("detail/", views.page, name="detail"),
    path("orphan/", views.page, name="orphan"),
]
"""
PROJECT = {
    "pkg/__init__.py": "",
    "pkg/helpers.py": HELPERS,
    "pkg/views.py": VIEWS,
    "pkg/urls.py": URLS,
    # Loaded by Django by convention: an entry point, though nothing imports it.
    "pkg/models.py": "from django.db import models\n",
    "pkg/orphan.py": "LIMIT = 3\n",
    "pkg/templates/pkg/index.html": (
        '{% include "pkg/row.html" %}\n<a href="{% url \'pkg:index\' %}">{{ value }}</a>\n'
    ),
    "pkg/templates/pkg/row.html": "<tr></tr>\n",
    "pkg/templates/pkg/unused.html": "<p>nobody renders me</p>\n",
}


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "medium"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "project", PROJECT)


@pytest.fixture
def repository(db: Any, source: Path) -> Repository:
    return Repository.objects.create(name="project", path=str(source))


def stale_findings(repository: Repository, *statuses: str) -> dict[tuple[str, str], Finding]:
    """The stale check's findings, by rule and the name their message quotes (the
    file for a message that quotes none)."""
    found = repository.findings.filter(check_name="stale")
    if statuses:
        found = found.filter(status__in=statuses)
    return {(f.rule, (f.message.split("'")[1:2] or [f.file])[0]): f for f in found}


def scanned(repository: Repository) -> Scan:
    scan = scan_repository(repository)
    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    return scan


def test_an_unused_function_is_reported_and_a_used_one_is_not(repository: Repository) -> None:
    scanned(repository)

    findings = stale_findings(repository)
    unused = findings[("unused-function", "unused_helper")]
    assert (unused.file, unused.line) == ("pkg/helpers.py", 8)
    assert "60% confidence" in unused.message
    assert unused.severity == Finding.Severity.INFO
    assert ("unused-function", "used_helper") not in findings
    # Views are used by the urls module; nothing the check reports is above low.
    assert ("unused-function", "index") not in findings
    assert all(f.severity <= Finding.Severity.LOW for f in findings.values())


def test_a_module_nothing_imports_is_reported_but_not_an_imported_one_or_an_entry_point(
    repository: Repository,
) -> None:
    scanned(repository)

    modules = {name for rule, name in stale_findings(repository) if rule == "unimported-module"}
    assert modules == {"pkg.orphan"}


def test_a_url_name_nothing_reverses_is_reported_but_not_one_linked_or_reversed(
    repository: Repository,
) -> None:
    scanned(repository)

    findings = stale_findings(repository)
    names = {name for rule, name in findings if rule == "unreversed-url-name"}
    assert names == {"pkg:orphan"}  # pkg:index is in a {% url %}, pkg:detail reversed
    assert findings[("unreversed-url-name", "pkg:orphan")].line == 9


def test_a_template_nothing_renders_is_reported_but_not_a_rendered_or_included_one(
    repository: Repository,
) -> None:
    scanned(repository)

    templates = {name for rule, name in stale_findings(repository) if rule == "unrendered-template"}
    assert templates == {"pkg/unused.html"}


def test_a_stale_finding_keeps_its_identity_when_lines_move(
    repository: Repository, source: Path
) -> None:
    scanned(repository)
    before = stale_findings(repository)[("unused-function", "unused_helper")]

    moved = HELPERS.replace('"""Helpers."""\n', '"""Helpers."""\n\nLIMIT = 3\nNAME = "x"\n')
    commit(source, {"pkg/helpers.py": moved}, "lines above")
    scan = scanned(repository)

    after = stale_findings(repository)[("unused-function", "unused_helper")]
    assert (after.pk, after.status, after.line) == (before.pk, Finding.Status.OPEN, 11)
    assert scan.summary["stale"]["new"] == 0


def test_an_intended_stale_finding_stays_intended(repository: Repository, source: Path) -> None:
    scanned(repository)
    finding = stale_findings(repository)[("unused-function", "unused_helper")]
    code_findings.mark_intended(finding)

    commit(source, {"pkg/helpers.py": "import os\n\n" + HELPERS}, "lines above")
    scan = scanned(repository)

    finding.refresh_from_db()
    assert finding.status == Finding.Status.INTENDED
    assert scan.summary["stale"]["intended"] == 1
    assert scan.summary["stale"]["new"] == 0


def test_a_rescan_after_a_one_file_change_extracts_only_that_file_and_matches_a_full_scan(
    repository: Repository, source: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    first = scanned(repository)
    assert first.state["checks"]["stale"]["extracted"] == len(PROJECT)
    extracted: list[str] = []
    extract = stale.extract

    def spy(path: Path, kind: str) -> Any:
        extracted.append(path.relative_to(source_checkout(repository)).as_posix())
        return extract(path, kind)

    monkeypatch.setattr(stale, "extract", spy)
    helpers = HELPERS + "\n\ndef another_unused():\n    return 3\n"
    commit(source, {"pkg/helpers.py": helpers}, "one more helper")
    scan = scanned(repository)

    assert extracted == ["pkg/helpers.py"]
    assert scan.state["checks"]["stale"]["extracted"] == 1
    incremental = {
        (f.rule, f.file, f.line, f.message, f.identity)
        for f in repository.findings.filter(check_name="stale", status=Finding.Status.OPEN)
    }
    assert ("unused-function", "another_unused") in stale_findings(repository)
    # A full run of the check, with an empty cache, on the same checkout.
    full = stale.run(context_for(repository, cache=tmp_path / "empty-cache"))
    assert {(r.rule, r.file, r.line, r.message, r.identity) for r in full} == incremental
    assert len(extracted) == 1 + len(PROJECT)


def test_a_file_that_does_not_parse_is_skipped_and_said(
    repository: Repository, source: Path
) -> None:
    commit(source, {"pkg/broken.py": "def broken(:\n    return\n"}, "a syntax error")

    scan = scanned(repository)

    findings = stale_findings(repository)
    assert scan.summary["stale"].get("error") is None
    broken = repository.findings.get(check_name="stale", rule="unparsable")
    assert broken.file == "pkg/broken.py"
    assert broken.severity == Finding.Severity.INFO
    assert "does not parse (line 1" in broken.message
    assert ("unused-function", "unused_helper") in findings


DJANGO_APP = {
    "shop/__init__.py": "",
    "shop/apps.py": """from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self):
        from shop import receivers
""",
    "shop/receivers.py": """from django.dispatch import receiver


@receiver(object())
def on_saved(sender, **kwargs):
    return None
""",
    "shop/models.py": """from django.db import models


class Order(models.Model):
    @property
    def total_label(self):
        return "1"

    def shown_in_admin(self):
        return "x"

    def never_called(self):
        return "y"
""",
    "shop/admin.py": """from django.contrib import admin

from shop.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["shown_in_admin"]
    actions = ["mark_paid"]

    def mark_paid(self, request, queryset):
        return None
""",
    "shop/consumers.py": """class OrderConsumer:
    async def order_changed(self, event):
        return None


def announce(layer):
    return layer.group_send("orders", {"type": "order.changed"})
""",
    "shop/routing.py": (
        "from shop.consumers import OrderConsumer\n\nroutes = [OrderConsumer.as_asgi()]\n"
    ),
    "shop/templates/shop/order.html": "{{ order.total_label }}\n",
    "shop/views.py": (
        "from django.shortcuts import render\n\n\n"
        "def order(request):\n    return render(request, 'shop/order.html')\n"
    ),
}


def test_what_django_calls_by_name_or_convention_is_not_reported(db: Any, tmp_path: Path) -> None:
    source = make_repository(tmp_path / "shop", DJANGO_APP)
    repository = Repository.objects.create(name="shop", path=str(source))

    scanned(repository)

    # The AppConfig and its ready(), a model, a signal receiver, a property a template reads, a
    # list_display entry, an admin action, a Channels handler for an event type: all
    # used; of the model's methods, only the one nothing calls is reported.
    assert set(stale_findings(repository)) == {
        ("unused-method", "never_called"),
        ("unused-function", "announce"),
    }


REGISTRIES = """import functools

from pkg.steps import step


class Playbook:
    @step("Ask for approval", action="request_approval")
    def request_approvals(self):
        return 1

    @functools.lru_cache(maxsize=4)
    def cached_but_unused(self):
        return 2
"""


def test_what_a_decorator_with_arguments_registers_is_not_reported(db: Any, tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/steps.py": "def step(title, action):\n    return lambda function: function\n",
        "pkg/playbook.py": REGISTRIES,
        "pkg/run.py": (
            'from pkg.playbook import Playbook\n\nif __name__ == "__main__":\n    Playbook()\n'
        ),
    }
    repository = Repository.objects.create(
        name="steps", path=str(make_repository(tmp_path / "steps", files))
    )

    scanned(repository)

    # A playbook step is called through its registry; a cache wraps, and registers nothing.
    assert set(stale_findings(repository)) == {("unused-method", "cached_but_unused")}


def own_product_files() -> dict[str, str]:
    """A checkout that is this product: manage.py and every own app's apps.py."""
    files = {"manage.py": "print('manage')\n"}
    for folder in history.own_app_folders():
        files[f"{folder}/__init__.py"] = ""
        files[f"{folder}/apps.py"] = "from django.apps import AppConfig\n"
    return files


TOOLS = """from chat.tools import Tool, register

register(Tool("list_tasks", "List tasks.", {}, handler=None))
register(Tool("never_called", "Nobody calls it.", {}, handler=None))
"""


def test_a_registered_tool_the_chat_never_ran_is_reported_for_this_products_repository(
    db: Any, tmp_path: Path, operator: Any
) -> None:
    files = {**own_product_files(), "chat/tools.py": TOOLS}
    source = make_repository(tmp_path / "product", files)
    repository = Repository.objects.create(name="product", path=str(source))
    ToolExecution.objects.create(run=make_run(operator), step=1, tool="list_tasks")

    scanned(repository)

    tools = {name for rule, name in stale_findings(repository) if rule == "unrun-tool"}
    assert tools == {"never_called"}
    finding = repository.findings.get(rule="unrun-tool")
    assert (finding.file, finding.line, finding.severity) == ("chat/tools.py", 4, 20)


def test_tools_are_not_judged_without_a_history_or_in_another_repository(
    db: Any, tmp_path: Path, operator: Any
) -> None:
    own = make_repository(tmp_path / "product", {**own_product_files(), "chat/tools.py": TOOLS})
    other = make_repository(tmp_path / "other", {"manage.py": "", "chat/tools.py": TOOLS})
    product = Repository.objects.create(name="product", path=str(own))
    elsewhere = Repository.objects.create(name="other", path=str(other))

    scanned(product)  # the chat never ran a tool: no history to judge by
    ToolExecution.objects.create(run=make_run(operator), step=1, tool="list_tasks")
    scanned(elsewhere)  # a history, but of this product, not of that repository

    assert not Finding.objects.filter(rule="unrun-tool").exists()


def test_a_command_is_judged_only_once_the_audit_trail_has_command_runs(
    db: Any, tmp_path: Path
) -> None:
    commands = {
        "chat/management/__init__.py": "",
        "chat/management/commands/__init__.py": "",
        "chat/management/commands/ran.py": "class Command:\n    pass\n",
        "chat/management/commands/never.py": "class Command:\n    pass\n",
    }
    source = make_repository(tmp_path / "product", {**own_product_files(), **commands})
    repository = Repository.objects.create(name="product", path=str(source))
    scanned(repository)
    assert not repository.findings.filter(rule="unrun-command").exists()

    AuditEvent.objects.create(
        actor_label="system", action=history.COMMAND_RUN_ACTION, object_repr="ran"
    )
    scanned(repository)

    commands_never_run = {n for rule, n in stale_findings(repository) if rule == "unrun-command"}
    assert commands_never_run == {"never"}


def source_checkout(repository: Repository) -> Path:
    return code_checkout.checkout_path(repository)


def context_for(repository: Repository, cache: Path) -> ScanContext:
    path = source_checkout(repository)
    scan = repository.scans.filter(status=Scan.Status.SUCCEEDED).first()
    assert scan is not None
    return ScanContext(
        repository=repository,
        path=path,
        commit=scan.commit,
        files=code_checkout.tracked_files(path, 30),
        changed=None,
        cache=cache,
        previous_state={},
        deadline=time.monotonic() + django_settings.HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS,
    )
