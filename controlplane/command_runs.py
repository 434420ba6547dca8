"""Which of the product's own management commands have run.

`manage.py` records each run of one of this project's commands in the audit trail
(`command.run`, the command's name as the object), before running it. The stale-code
check reads that history to report commands nobody runs. Django's and libraries'
commands are not recorded. Recording is best effort: a database that is not there
yet (before `migrate`) or refuses the write never stops the command.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from django.db import DatabaseError

log = logging.getLogger(__name__)

COMMAND_RUN_ACTION = "command.run"


def own_app_names() -> set[str]:
    """This project's apps: those whose package lives in the project's directory,
    outside an installed environment (a virtualenv kept in the directory)."""
    from django.apps import apps
    from django.conf import settings

    base = Path(settings.BASE_DIR).resolve()
    names = set()
    for config in apps.get_app_configs():
        path = Path(config.path).resolve()
        if not path.is_relative_to(base):
            continue
        parts = path.relative_to(base).parts
        if any(part == "site-packages" or part.startswith(".") for part in parts):
            continue
        names.add(config.name)
    return names


def record_command_run(argv: Sequence[str]) -> bool:
    """Record the command `argv` runs when it is one of this project's; True when
    recorded."""
    name = argv[1] if len(argv) > 1 else ""
    # --settings and --pythonpath are applied by Django's own start-up: leave such
    # runs to it rather than set up with other settings.
    if (
        not name
        or name.startswith("-")
        or any(arg.startswith(("--settings", "--pythonpath")) for arg in argv)
    ):
        return False
    import django
    from django.core.management import get_commands

    django.setup()
    if get_commands().get(name) not in own_app_names():
        return False
    from controlplane import audit  # models: only once the apps are loaded

    try:
        audit.record(COMMAND_RUN_ACTION, target_repr=name)
    except DatabaseError as error:
        log.debug("Command run of %s not recorded: %s", name, error)
        return False
    return True


def execute(argv: Sequence[str]) -> None:
    from django.core.management import execute_from_command_line

    record_command_run(argv)
    execute_from_command_line(list(argv))
