"""Every command the product tells a person to run works as typed: `bin/manage ...`
(which sets up the environment and finds the project from any directory), never
`manage.py ...`, which needs the virtual environment's Python and the project's
directory."""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
# A command hint: manage.py followed by a command name (not manage.py as a file name).
HINT = re.compile(r"manage\.py\s+[a-z_]")
PRODUCT_PACKAGES = ("controlplane", "routing", "chat", "selfheal", "healthmon", "benchmarks")


def printed_strings(path: Path) -> Iterator[tuple[int, str]]:
    """The string literals of a module that can reach a person (messages, hints, help
    text, templates in code): all but docstrings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    scopes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if isinstance(node, scopes) and node.body and isinstance(node.body[0], ast.Expr):
            docstrings.add(id(node.body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            yield node.lineno, node.value


def product_modules() -> Iterator[Path]:
    for package in PRODUCT_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            # Applied migrations are history (a trigger's message in SQL is rewritten by
            # a new migration, not by editing an old one).
            if "migrations" not in path.parts:
                yield path


def test_no_message_of_the_product_hints_at_manage_py() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()[:80]}"
        for path in product_modules()
        for line, text in printed_strings(path)
        if HINT.search(text)
    ]
    assert found == []


def test_no_template_hints_at_manage_py() -> None:
    templates = [*ROOT.glob("templates/**/*.html"), *ROOT.glob("*/templates/**/*.html")]
    assert len(templates) > 20
    found = [str(path.relative_to(ROOT)) for path in templates if HINT.search(path.read_text())]
    assert found == []


def test_the_readme_and_the_settings_list_give_commands_that_work_as_typed() -> None:
    for name in ("README.md", ".env.example"):
        text = (ROOT / name).read_text()
        assert [match.group(0) for match in HINT.finditer(text)] == [], name
    assert "bin/manage " in (ROOT / "README.md").read_text()


def test_the_bootstrap_hint_names_bin_manage(db, capsys) -> None:
    from django.core.management import call_command

    call_command("bootstrap")
    call_command("bootstrap")

    assert "reset it with: bin/manage changepassword owner" in capsys.readouterr().out


def test_bin_manage_runs_a_command_from_any_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ROOT / "bin" / "manage"), "help", "bootstrap"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "--demo" in done.stdout  # the command's own help, on stdout alone
