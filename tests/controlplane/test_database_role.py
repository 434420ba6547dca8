"""README's database role for the application, set up with README's own SQL on the test
database: the role writes what the application writes, and cannot disable a guard
trigger, drop one, or truncate history."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from controlplane.audit import record
from controlplane.models import AuditEvent, FeatureToggle

README = Path(settings.BASE_DIR) / "README.md"


def readme_role_sql() -> list[str]:
    """The statements of README's indented block that creates `controlplane_app`."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    CREATE ROLE"))
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return [statement.strip() for statement in "\n".join(block).split(";") if statement.strip()]


@pytest.fixture
def app_role() -> Iterator[dict[str, Any]]:
    """Connection parameters of a role made with README's SQL (roles belong to the
    whole cluster: this one is named for this test run and dropped afterwards). Its
    connection sees only committed rows: the tests using it are transactional."""
    role, password = f"controlplane_app_test_{os.getpid()}", secrets.token_urlsafe(16)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (owner,) = cursor.fetchone()
        for statement in readme_role_sql():
            sql = (
                statement.replace("controlplane_app", quote(role))
                .replace("controlplane_owner", quote(owner))
                .replace(
                    "DATABASE controlplane",
                    f"DATABASE {quote(connection.settings_dict['NAME'])}",
                )
                .replace("'change-me'", f"'{password}'")
            )
            cursor.execute(sql)
    params = connection.get_connection_params()
    yield {
        "host": params.get("host") or "127.0.0.1",
        "port": params.get("port") or 5432,
        "dbname": connection.settings_dict["NAME"],
        "user": role,
        "password": password,
        "autocommit": True,
    }
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {quote(role)}")
        cursor.execute(f"DROP ROLE {quote(role)}")


def test_readme_gives_the_role_sql():
    statements = readme_role_sql()
    assert statements[0].startswith("CREATE ROLE controlplane_app LOGIN")
    assert any("ALTER DEFAULT PRIVILEGES FOR ROLE controlplane_owner" in s for s in statements)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_app_role_writes_what_the_application_writes(app_role):
    toggle = FeatureToggle.objects.create(key="agents.autopilot")
    with psycopg.connect(**app_role) as app:
        app.execute(
            "INSERT INTO controlplane_auditevent (at, actor_label, action, object_id, object_repr)"
            " VALUES (now(), 'system', 'test.written-by-the-app', '', '')"
        )
        app.execute(
            "UPDATE controlplane_featuretoggle SET enabled = true WHERE id = %s", [toggle.pk]
        )
        owned = app.execute(
            "SELECT count(*) FROM pg_tables WHERE tableowner = current_user"
        ).fetchone()
    assert owned == (0,)
    toggle.refresh_from_db()
    assert toggle.enabled is True


GUARDS_LIFTED_OR_GOT_AROUND = [
    "ALTER TABLE controlplane_auditevent DISABLE TRIGGER controlplane_auditevent_append_only",
    "ALTER TABLE routing_operationlog DISABLE TRIGGER ALL",
    "DROP TRIGGER controlplane_auditevent_refuses_truncate ON controlplane_auditevent",
    "ALTER TABLE controlplane_featuretoggle DISABLE TRIGGER controlplane_featuretoggle_locked",
    "TRUNCATE controlplane_auditevent",
    "TRUNCATE routing_operationlog",
    "UPDATE controlplane_auditevent SET action = 'test.rewritten'",
]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_app_role_cannot_lift_or_get_around_the_guards(app_role):
    event = record("test.something")
    with psycopg.connect(**app_role) as app:
        for statement in GUARDS_LIFTED_OR_GOT_AROUND:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
    assert AuditEvent.objects.get(pk=event.pk).action == "test.something"
