"""Agent tools and management commands never run, for this product's own repository:
its database holds their history, so "never run" is a fact, not a guess.

This product's own repository is one whose checkout holds this project: `manage.py`
and every app package of this project (the installed apps that live under
`BASE_DIR`), each with its `apps.py`. Any other repository's tools and commands are
not judged: their history is not here.

- An agent tool registered in the checkout (`Tool("name", ...)` outside tests) that
  no `chat.ToolExecution` ever recorded is reported, but only once the chat has run
  some tool at all: a fresh installation has no history, and every tool would look
  unused.
- A management command is judged the same way from the audit trail's
  `COMMAND_RUN_ACTION` events (`object_repr` = the command's name), which `manage.py`
  writes for each run of one of the product's commands (`controlplane.command_runs`).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from django.apps import apps
from django.conf import settings

from controlplane.command_runs import COMMAND_RUN_ACTION, own_app_names


def own_app_folders() -> list[str]:
    """This project's app packages, as folders relative to BASE_DIR."""
    base = Path(settings.BASE_DIR).resolve()
    own = own_app_names()
    return sorted(
        Path(config.path).resolve().relative_to(base).as_posix()
        for config in apps.get_app_configs()
        if config.name in own
    )


def is_this_product(files: dict[str, str]) -> bool:
    folders = own_app_folders()
    return (
        "manage.py" in files
        and bool(folders)
        and all(f"{folder}/apps.py" in files for folder in folders)
    )


def executed_tools() -> set[str] | None:
    """The names of the tools the chat ever ran; None when it never ran one."""
    from chat.models import ToolExecution

    names = set(ToolExecution.objects.values_list("tool", flat=True).distinct())
    return names or None


def commands_run() -> set[str] | None:
    """The commands the audit trail saw run; None when it saw none (no history)."""
    from controlplane.models import AuditEvent

    names = set(
        AuditEvent.objects.filter(action=COMMAND_RUN_ACTION)
        .values_list("object_repr", flat=True)
        .distinct()
    )
    return names or None


def command_name(path: str) -> str | None:
    """The command a file defines (`<app>/management/commands/<name>.py`), or None."""
    pure = PurePosixPath(path)
    if (
        pure.suffix == ".py"
        and pure.parent.name == "commands"
        and pure.parent.parent.name == "management"
        and not pure.name.startswith("_")
    ):
        return pure.stem
    return None
