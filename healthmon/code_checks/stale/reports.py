"""The join: what the facts of all files together say is stale, as `Reported`
problems, each with its confidence (in the message) and a severity from it: low at
80% and above, info below. Nothing here is ever more than low: stale code costs
reading time, it does not break anything.

A problem's identity is the check, the rule, the file, and the definition line's
text (the `def`, the `path(...)` line, the `Tool(` line), never its number: a problem
keeps its finding, and an Operator's "intended", when lines move.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from healthmon.code_checks import Reported, identity_of
from healthmon.code_checks.stale import conventions, history
from healthmon.code_checks.stale.facts import Facts
from healthmon.models import Finding

NAME = "stale"


def severity_of(confidence: int) -> int:
    return Finding.Severity.LOW if confidence >= 80 else Finding.Severity.INFO


@dataclass
class Join:
    """The facts of one checkout's files, by path, and the checkout to quote lines of."""

    checkout: Path
    python: dict[str, Facts]
    templates: dict[str, Facts]
    configuration: dict[str, Facts]
    _lines: dict[str, list[str]] = field(default_factory=dict)

    def used_names(self) -> set[str]:
        return {name for facts in self._all_facts() for name in facts.get("used", ())}

    def _all_facts(self) -> Iterable[Facts]:
        yield from self.python.values()
        yield from self.templates.values()

    def lines(self, path: str) -> list[str]:
        if path not in self._lines:
            try:
                text = (self.checkout / path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            self._lines[path] = text.splitlines()
        return self._lines[path]

    def reported(
        self, rule: str, confidence: int, message: str, path: str, line: int, severity: int = 0
    ) -> Reported:
        return Reported(
            check=NAME,
            rule=rule,
            severity=severity or severity_of(confidence),
            message=f"{message} ({confidence}% confidence)",
            file=path,
            line=line or None,
            identity=identity_of(NAME, rule, path, self.lines(path), line, line),
        )


def unparsable(join: Join) -> list[Reported]:
    return [
        join.reported(
            "unparsable",
            100,
            f"Not checked for stale code: it does not parse ({facts['error']}); what it uses "
            "is not counted, so what only it uses may be reported as unused",
            path,
            0,
            severity=Finding.Severity.INFO,  # ruff reports the syntax error itself
        )
        for path, facts in sorted(join.python.items())
        if "error" in facts
    ]


def unused_definitions(join: Join) -> list[Reported]:
    used = join.used_names()
    found = []
    for path, facts in sorted(join.python.items()):
        if conventions.is_test(path) or conventions.is_migration(path):
            continue  # entry points: pytest and the migration runner call into them
        for item in facts.get("definitions", ()):
            name, kind = item["name"], item["kind"]
            if name in used or _is_hook(name, kind) or _is_registered(item):
                continue
            message = f"Unused {kind} '{name}'"
            found.append(
                join.reported(f"unused-{kind}", item["confidence"], message, path, item["line"])
            )
    return found


def _is_hook(name: str, kind: str) -> bool:
    if kind == "function":
        return name in conventions.ENTRY_FUNCTION_NAMES
    if kind not in ("method", "property", "class"):
        return False
    return any(fnmatchcase(name, pattern) for pattern in conventions.HOOK_NAMES)


def _is_registered(definition: Facts) -> bool:
    """A class the framework finds by its base (an AppConfig, a model, a command)."""
    bases = definition.get("bases", ())
    return any(base in conventions.FOUND_BY_BASE or base.endswith("Model") for base in bases)


def module_name(path: str) -> str:
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def unimported_modules(join: Join) -> list[Reported]:
    modules = {
        module_name(path): path
        for path in join.python
        if path.endswith(".py") and not conventions.is_skipped(path)
    }
    imported = _imported(join, modules)
    used = join.used_names()
    found = []
    for module, path in sorted(modules.items(), key=lambda pair: pair[1]):
        parent = str(PurePosixPath(path).parent)
        in_package = parent != "." and f"{parent}/__init__.py" in join.python
        facts = join.python[path]
        if (
            module in imported
            or facts.get("script")
            or conventions.is_entry_module(path, in_package)
        ):
            continue
        # Its last name used somewhere (a string, an attribute): perhaps imported by name.
        confidence = 60 if module.rsplit(".", 1)[-1] in used else 80
        found.append(
            join.reported(
                "unimported-module",
                confidence,
                f"Module '{module}' is imported by nothing and is not an entry point",
                path,
                0,
            )
        )
    return found


def _imported(join: Join, modules: dict[str, str]) -> set[str]:
    """The modules some file imports, or names in a string (settings, pyproject)."""
    imported: set[str] = set()
    for path, facts in join.python.items():
        package = module_name(path).split(".")
        if not path.endswith("__init__.py"):
            package = package[:-1]
        for level, name, names in facts.get("imports", ()):
            base = package[: len(package) - (level - 1)] if level else []
            target = ".".join([*base, *([name] if name else [])])
            imported.update(_parents(target))
            imported.update(f"{target}.{each}" if target else each for each in names)
    for facts in [*join.python.values(), *join.configuration.values()]:
        for text in facts.get("strings", ()):
            parts = text.split(":")[0].split(".")
            for end in range(len(parts), 0, -1):
                if ".".join(parts[:end]) in modules:
                    imported.add(".".join(parts[:end]))
                    break
    return imported


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def unreversed_url_names(join: Join) -> list[Reported]:
    used: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for facts in [*join.python.values(), *join.templates.values()]:
        used.update(name.rsplit(":", 1)[-1] for name in facts.get("url_uses", ()))
        patterns.extend(re.compile(pattern) for pattern in facts.get("url_patterns", ()))
    found = []
    for path, facts in sorted(join.python.items()):
        if conventions.is_test(path):
            continue
        namespace = facts.get("app_name")
        # An API's or a probe's clients call it by its path, not its name.
        confidence = 40 if "api" in PurePosixPath(path).stem else 60
        for name, line in facts.get("url_names", ()):
            full = f"{namespace}:{name}" if namespace else name
            if name in used or any(p.fullmatch(full) or p.fullmatch(name) for p in patterns):
                continue
            found.append(
                join.reported(
                    "unreversed-url-name",
                    confidence,
                    f"URL name '{full}' is never reversed nor linked ({{% url %}}, reverse, "
                    "redirect)",
                    path,
                    line,
                )
            )
    return found


def unrendered_templates(join: Join) -> list[Reported]:
    named: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for facts in [*join.python.values(), *join.templates.values()]:
        named.update(facts.get("templates", ()))
        patterns.extend(re.compile(pattern) for pattern in facts.get("template_patterns", ()))
    found = []
    for path in sorted(join.templates):
        name = conventions.template_name(path)
        if (
            name in named
            or conventions.is_framework_template(name)
            or any(p.fullmatch(name) for p in patterns)
        ):
            continue
        confidence = 40 if conventions.is_generic_view_template(name) else 70
        found.append(
            join.reported(
                "unrendered-template",
                confidence,
                f"Template '{name}' is never rendered, included or extended",
                path,
                0,
            )
        )
    return found


def unrun_tools_and_commands(
    join: Join,
    files: dict[str, str],
    executed_tools: Callable[[], set[str] | None] = history.executed_tools,
    commands_run: Callable[[], set[str] | None] = history.commands_run,
) -> list[Reported]:
    if not history.is_this_product(files):
        return []
    found = []
    tools = executed_tools()
    if tools is not None:
        for path, facts in sorted(join.python.items()):
            if conventions.is_test(path):
                continue
            for name, line in facts.get("tools", ()):
                if name not in tools:
                    message = f"Agent tool '{name}' is registered but no chat run ever called it"
                    found.append(join.reported("unrun-tool", 80, message, path, line))
    commands = commands_run()
    if commands is not None:
        for path in sorted(join.python):
            command = history.command_name(path)
            if command and command not in commands:
                message = f"Management command '{command}' was never run (audit trail)"
                found.append(join.reported("unrun-command", 70, message, path, 0))
    return found
