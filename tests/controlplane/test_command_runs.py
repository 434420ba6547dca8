"""manage.py records the runs of the product's own commands in the audit trail (what
the stale-code check reads to find commands nobody runs), and only those."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import management
from django.db import DatabaseError

from controlplane import audit
from controlplane.command_runs import (
    COMMAND_RUN_ACTION,
    execute,
    own_app_names,
    record_command_run,
)
from controlplane.models import AuditEvent


def runs() -> list[str]:
    return list(
        AuditEvent.objects.filter(action=COMMAND_RUN_ACTION).values_list("object_repr", flat=True)
    )


def test_manage_py_records_a_run_before_the_command_runs(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[list[str], list[str]]] = []
    monkeypatch.setattr(
        management, "execute_from_command_line", lambda argv: seen.append((argv, runs()))
    )

    execute(["manage.py", "toggle", "list"])

    assert seen == [(["manage.py", "toggle", "list"], ["toggle"])]
    assert AuditEvent.objects.get(action=COMMAND_RUN_ACTION).actor_label == "system"


@pytest.mark.parametrize(
    "argv",
    [
        ["manage.py", "check"],
        ["manage.py", "migrate"],
        ["manage.py", "--version"],
        ["manage.py"],
        ["manage.py", "no_such_command"],
        ["manage.py", "toggle", "list", "--settings", "other.settings"],
    ],
)
def test_django_s_commands_unknown_ones_and_other_settings_are_not_recorded(
    db: Any, argv: list[str]
) -> None:
    assert record_command_run(argv) is False
    assert runs() == []


def test_the_product_s_apps_are_those_in_its_directory_outside_a_virtualenv() -> None:
    names = own_app_names()

    assert {"controlplane", "routing", "chat", "selfheal", "healthmon"} <= names
    assert not {name for name in names if name.startswith(("django", "channels", "axes"))}


def test_a_database_that_refuses_the_write_does_not_stop_the_command(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise DatabaseError("no such table: controlplane_auditevent")

    monkeypatch.setattr(audit, "record", refuse)
    ran: list[list[str]] = []
    monkeypatch.setattr(management, "execute_from_command_line", ran.append)

    execute(["manage.py", "spend"])

    assert ran == [["manage.py", "spend"]]
