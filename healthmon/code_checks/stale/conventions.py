"""What Django, Celery, Channels and pytest reach by name or by convention, so the
stale check does not report it: entry-point modules, hook methods, decorators that
register a function, and templates the framework renders by its own names.

Each list says why it is there; a name here is never reported as stale, a template
named by a generic view's convention only with a low confidence.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# Modules Django, Celery or Channels import by their name (autodiscovery, settings,
# the app registry), or that a person or a tool runs (scripts, tests).
ENTRY_MODULE_STEMS = frozenset(
    {
        "__init__",
        "__main__",
        "manage",
        "setup",
        "conftest",
        "noxfile",
        "fabfile",
        "settings",
        "wsgi",
        "asgi",
        "celery",
        "models",
        "admin",
        "apps",
        "urls",
        "views",
        "tasks",
        "consumers",
        "routing",
        "signals",
        "receivers",
        "handlers",
        "checks",
        "context_processors",
        "middleware",
        "sitemaps",
        "feeds",
        "translation",
    }
)
# Folders whose every module is loaded by convention.
ENTRY_FOLDERS = frozenset({"migrations", "templatetags", "tests", "test"})

# Methods and functions the framework calls by name (overrides, hooks).
HOOK_NAMES = (
    # AppConfig, commands, checks
    "ready",
    "handle",
    "add_arguments",
    "create_parser",
    # models, managers, fields
    "save",
    "delete",
    "clean",
    "clean_*",
    "full_clean",
    "validate_*",
    "get_absolute_url",
    "natural_key",
    "get_by_natural_key",
    "get_queryset",
    "from_db_value",
    "to_python",
    "get_prep_value",
    "get_db_prep_value",
    "deconstruct",
    "db_type",
    "formfield",
    "contribute_to_class",
    "as_sql",
    "as_*",
    "resolve_expression",
    # views, forms, widgets
    "dispatch",
    "setup",
    "get",
    "post",
    "put",
    "patch",
    "head",
    "options",
    "get_*",
    "form_valid",
    "form_invalid",
    "render",
    "render_to_response",
    "label_from_instance",
    "value_from_datadict",
    "format_value",
    "id_for_label",
    "has_changed",
    # admin
    "has_*_permission",
    "formfield_for_*",
    "save_model",
    "save_related",
    "save_formset",
    "delete_model",
    "delete_queryset",
    "lookups",
    "queryset",
    "choices",
    "changelist_view",
    "changeform_view",
    "change_view",
    "add_view",
    "delete_view",
    "history_view",
    "response_*",
    "each_context",
    "index",
    "app_index",
    "log_*",
    "message_user",
    # middleware, auth backends, logging
    "process_request",
    "process_response",
    "process_view",
    "process_exception",
    "process_template_response",
    "authenticate",
    "user_can_authenticate",
    "emit",
    "filter",
    "format",
    # Channels consumers
    "connect",
    "disconnect",
    "receive",
    "receive_json",
    "websocket_*",
    "http_*",
    # Celery tasks, unittest, pytest
    "run",
    "on_failure",
    "on_success",
    "on_retry",
    "after_return",
    "setUp*",
    "tearDown*",
    "pytest_*",
    # asyncio protocols, websocket clients, sqlite3 aggregates
    "connection_made",
    "connection_lost",
    "data_received",
    "eof_received",
    "datagram_received",
    "error_received",
    "on[A-Z]*",
    "step",
    "finalize",
    "value_to_string",
    # Meta classes and the like, read by the framework
    "Meta",
    "Media",
    "Config",
    "Command",
)
# Functions a script or a console entry point ("pkg.cli:main") starts from.
ENTRY_FUNCTION_NAMES = frozenset({"main"})
# Classes Django finds by what they subclass: the app registry takes an app's only
# AppConfig subclass, a models module's Model subclasses, `manage.py` a commands
# module's Command.
FOUND_BY_BASE = frozenset({"AppConfig", "Model", "BaseCommand", "Migration"})
# Decorators (vulture's "@name" form) that register what they decorate.
REGISTERING_DECORATORS = (
    "@receiver",
    "@*.receiver",
    "@admin.register",
    "@admin.action",
    "@admin.display",
    "@register.*",
    "@*.register",
    "@*.register_*",
    "@register",
    "@register_*",
    "@pytest.fixture",
    "@pytest.*",
    "@fixture",
    "@shared_task",
    "@*.task",
    "@task",
    "@*.setter",
    "@*.deleter",
    "@override",
    "@typing.override",
    "@*.hookimpl",
    "@*.route",
    "@*.command",
    "@*.on",
    "@deconstructible",
)

TEMPLATE_SUFFIXES = (".html", ".htm", ".txt", ".xml", ".email", ".md", ".js", ".css", ".svg")
# Templates Django or django.contrib renders by its own names.
_FRAMEWORK_TEMPLATE = re.compile(
    r"^(admin|registration|django|rest_framework|debug_toolbar)/|^(400|403|404|500|403_csrf)\.html$"
)
# Generic class-based views' default names (<app>/<model>_list.html and so on).
_GENERIC_VIEW_TEMPLATE = re.compile(r"_(list|detail|form|confirm_delete|archive\w*)\.html$")

# Python files that are plainly not modules of the project (build and vendored code).
_SKIPPED_FOLDERS = frozenset(
    {".venv", "venv", "node_modules", "site-packages", "build", "dist", ".tox"}
)
# Text files that may name modules ("pkg.module:app", "pkg.settings").
CONFIGURATION_SUFFIXES = (".toml", ".cfg", ".ini", ".yml", ".yaml", ".sh", ".service")
CONFIGURATION_NAMES = frozenset({"Procfile", "Makefile", "Dockerfile", "Justfile"})


def is_skipped(path: str) -> bool:
    return any(part in _SKIPPED_FOLDERS for part in PurePosixPath(path).parts[:-1])


def is_test(path: str) -> bool:
    pure = PurePosixPath(path)
    return (
        any(part in ("tests", "test") for part in pure.parts[:-1])
        or pure.name.startswith("test_")
        or pure.stem.endswith("_test")
        or pure.name == "conftest.py"
    )


def is_migration(path: str) -> bool:
    return "migrations" in PurePosixPath(path).parts[:-1]


def is_entry_module(path: str, is_package_module: bool) -> bool:
    """A module nothing need import to be used: loaded by convention, run as a
    script, or a test. `is_package_module`: its folder is a package (has an
    __init__.py); a file outside packages can only be run, not imported by name."""
    pure = PurePosixPath(path)
    stem = pure.stem
    return (
        not is_package_module
        or stem in ENTRY_MODULE_STEMS
        or stem.startswith("settings")
        or stem.endswith("settings")
        or is_test(path)
        or any(part in ENTRY_FOLDERS for part in pure.parts[:-1])
        or "/management/commands/" in f"/{path}"
        or any(part in ENTRY_MODULE_STEMS - {"__init__"} for part in pure.parts[:-1])
    )


def is_template_file(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return "templates" in parts[:-1] and path.endswith(TEMPLATE_SUFFIXES)


def template_name(path: str) -> str:
    """The name a template is loaded by: its path below its last `templates` folder."""
    parts = PurePosixPath(path).parts
    last = len(parts) - 1 - parts[::-1].index("templates")
    return "/".join(parts[last + 1 :])


def is_framework_template(name: str) -> bool:
    return bool(_FRAMEWORK_TEMPLATE.search(name))


def is_generic_view_template(name: str) -> bool:
    return bool(_GENERIC_VIEW_TEMPLATE.search(name))


def is_configuration_file(path: str) -> bool:
    pure = PurePosixPath(path)
    return (
        path.endswith(CONFIGURATION_SUFFIXES)
        or pure.name in CONFIGURATION_NAMES
        or (len(pure.parts) == 2 and pure.parts[0] == "bin")
    )
