"""What one file says about the rest of the project: the facts the stale check joins.

Extracted once per git blob (the facts depend only on the file's text, never on its
path, so one blob's facts hold wherever it lies) and kept as JSON:

- a Python file: its definitions (functions, methods, classes, properties, with
  vulture's confidence: 60%, a name-based guess), the names it uses (loaded names
  and attributes, plus every string that reads like a name: admin `list_display`
  entries, `getattr` names, `__all__`, dotted paths, Channels event types), its
  imports as written (relative ones are resolved later, against the file's place),
  the dotted strings that may name a module, the URL names it defines
  (`path(..., name=...)`, with the module's `app_name`) and reverses, the template
  names it mentions, the agent tools it registers, and whether it runs as a script;
- a template: the names its tags and variables use, the URL names of its `{% url %}`
  tags and the templates it includes or extends;
- a configuration file (pyproject.toml, a Procfile...): the dotted strings in it.

A Python file that does not parse has only its `error`.

This is vulture's idea (a definition whose name nothing uses is unused) in one pass
over the tree that the other facts need anyway: vulture itself walked each tree a
second time with a Python visitor, and took three quarters of the check's time on
this product's repository.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

from healthmon.code_checks.stale.conventions import REGISTERING_DECORATORS, TEMPLATE_SUFFIXES

Facts = dict[str, Any]

# Vulture's confidence for a definition no name uses: names are matched, not
# objects, so a same-named use anywhere hides it, and a use by a computed name
# (getattr with a variable) is not seen.
DEFINITION_CONFIDENCE = 60
REVERSING_CALLS = frozenset({"reverse", "reverse_lazy", "redirect", "resolve_url"})
URL_SETTINGS = frozenset(
    {"LOGIN_URL", "LOGIN_REDIRECT_URL", "LOGOUT_REDIRECT_URL", "pattern_name", "url_name"}
)
PROPERTY_DECORATORS = frozenset({"property", "cached_property", "functools.cached_property"})
# Decorators that take arguments and wrap, rather than register, what they decorate.
WRAPPERS_WITH_ARGUMENTS = frozenset(
    {"lru_cache", "wraps", "singledispatchmethod", "deprecated", "override_settings"}
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+(?::[A-Za-z_]\w*)?")
_TEMPLATE_TAG = re.compile(r"\{[{%](.*?)[%}]\}", re.DOTALL)
_URL_TAG = re.compile(r"\{%\s*url\s+(['\"])(.+?)\1")
_ESCAPED_SUFFIXES = tuple(re.escape(suffix) for suffix in TEMPLATE_SUFFIXES)
_QUOTED = re.compile(r"(['\"])([^'\"\s{}]+?)\1")


def extract_python(text: str) -> Facts:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as error:
        line = getattr(error, "lineno", None)
        where = f"line {line}: " if line else ""
        return {"error": f"{where}{getattr(error, 'msg', None) or error}"}
    facts = _PythonFacts()
    facts.definitions_in(tree.body, in_class=False)
    for node in _walk(tree):
        facts.read(node)
    return _as_json(facts.__dict__)


class _PythonFacts:
    def __init__(self) -> None:
        self.definitions: list[dict[str, Any]] = []
        self.used: set[str] = set()
        self.imports: list[list[Any]] = []
        self.strings: set[str] = set()
        self.url_names: list[list[Any]] = []
        self.app_name: str | None = None
        self.url_uses: set[str] = set()
        self.url_patterns: set[str] = set()
        self.templates: set[str] = set()
        self.template_patterns: set[str] = set()
        self.tools: list[list[Any]] = []
        self.script = False

    def definitions_in(self, body: list[ast.stmt], in_class: bool) -> None:
        for statement in body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                decorators = [_dotted(decorator) for decorator in statement.decorator_list]
                if set(decorators) & PROPERTY_DECORATORS:
                    kind = "property"
                else:
                    kind = "method" if in_class else "function"
                self._define(statement, kind, decorators)
                self.definitions_in(statement.body, in_class=False)
            elif isinstance(statement, ast.ClassDef):
                decorators = [_dotted(decorator) for decorator in statement.decorator_list]
                self._define(statement, "class", decorators, bases=statement.bases)
                self.definitions_in(statement.body, in_class=True)
            else:
                self.definitions_in(_inner_statements(statement), in_class)

    def _define(
        self,
        node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
        kind: str,
        decorators: list[str],
        bases: list[ast.expr] | None = None,
    ) -> None:
        name = node.name
        if name.startswith("__") and name.endswith("__"):
            return  # called by Python itself
        if any(
            fnmatchcase(f"@{each}", pattern)
            for each in decorators
            for pattern in REGISTERING_DECORATORS
        ) or any(_registers(decorator) for decorator in node.decorator_list):
            return
        definition = {"name": name, "kind": kind, "line": node.lineno}
        definition["confidence"] = DEFINITION_CONFIDENCE
        if bases:
            definition["bases"] = [_dotted(base).rsplit(".", 1)[-1] for base in bases]
        self.definitions.append(definition)

    def read(self, node: ast.AST) -> None:
        kind = type(node)
        # By type, not isinstance: this runs for every node of every file.
        if kind is ast.Name:
            if type(node.ctx) is not ast.Store:  # type: ignore[attr-defined]
                self.used.add(node.id)  # type: ignore[attr-defined]
        elif kind is ast.Attribute:
            if type(node.ctx) is not ast.Store:  # type: ignore[attr-defined]
                self.used.add(node.attr)  # type: ignore[attr-defined]
        elif kind is ast.Constant:
            value = node.value  # type: ignore[attr-defined]
            if type(value) is str and len(value) < 300:
                self._string(value)
        else:
            self._read_other(node)

    def _read_other(self, node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            self._call(node)
        elif isinstance(node, ast.Import):
            self.imports.extend([0, alias.name, []] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names if alias.name != "*"]
            self.imports.append([node.level, node.module or "", names])
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self._assigned(target.id, node.value)
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.value is not None:
                self._assigned(node.target.id, node.value)
        elif isinstance(node, ast.JoinedStr):
            pattern = _pattern(node).split("\\#")[0]
            if pattern.endswith(_ESCAPED_SUFFIXES):
                self.template_patterns.add(pattern)
        elif isinstance(node, ast.If):
            test = node.test
            if isinstance(test, ast.Compare) and _dotted(test.left) == "__name__":
                self.script = True

    def _string(self, value: str) -> None:
        if _IDENTIFIER.fullmatch(value):
            self.used.add(value)
        elif _DOTTED.fullmatch(value):
            self.strings.add(value)
            self.used.update(_IDENTIFIER.findall(value))
            # Channels calls a consumer's method by its event type: "run.changed".
            self.used.add(value.replace(".", "_"))
        if " " in value:
            return
        if value.split("#")[0].endswith(TEMPLATE_SUFFIXES):
            self.templates.add(value.split("#")[0])
        if ":" in value and not value.startswith(("http", "/")):
            self.url_uses.add(value)  # "app:name", in any string

    def _assigned(self, name: str, value: ast.expr) -> None:
        text = _literal(value)
        if name == "app_name" and text:
            self.app_name = text
        elif name in URL_SETTINGS and text:
            self.url_uses.add(text)

    def _call(self, node: ast.Call) -> None:
        name = _dotted(node.func).rsplit(".", 1)[-1]
        keywords = {keyword.arg: keyword.value for keyword in node.keywords if keyword.arg}
        if name in ("path", "re_path", "url") and "name" in keywords:
            url_name = _literal(keywords["name"])
            if url_name:
                self.url_names.append([url_name, node.lineno])
        elif name in REVERSING_CALLS and node.args:
            first = node.args[0]
            if isinstance(first, ast.JoinedStr):
                self.url_patterns.add(_pattern(first))
            elif text := _literal(first):
                self.url_uses.add(text)
        elif name == "Tool":
            tool = _literal(node.args[0]) if node.args else _literal(keywords.get("name"))
            if tool:
                self.tools.append([tool, node.lineno])


_LEAVES = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


def _walk(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` but the operator and context singletons, in no order:
    ast.walk's cost is most of the extraction."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list:
                todo.extend(each for each in value if isinstance(each, ast.AST))
            elif isinstance(value, ast.AST) and not isinstance(value, _LEAVES):
                todo.append(value)


def _inner_statements(statement: ast.stmt) -> list[ast.stmt]:
    """The statements an if, for, while, with, try or match holds."""
    inner: list[ast.stmt] = []
    for name in ("body", "orelse", "finalbody"):
        inner.extend(getattr(statement, name, None) or [])
    for part in [*getattr(statement, "handlers", []), *getattr(statement, "cases", [])]:
        inner.extend(part.body)
    return inner


def extract_template(text: str) -> Facts:
    used: set[str] = set()
    for tag in _TEMPLATE_TAG.findall(text):
        used.update(_IDENTIFIER.findall(tag))
    templates = set()
    for _quote, value in _QUOTED.findall(text):
        if value.split("#")[0].endswith(TEMPLATE_SUFFIXES):
            templates.add(value.split("#")[0])
    return _as_json(
        {
            "used": used,
            "url_uses": {value for _quote, value in _URL_TAG.findall(text)},
            "templates": templates,
        }
    )


def extract_configuration(text: str) -> Facts:
    return _as_json({"strings": set(_DOTTED.findall(text))})


def _registers(decorator: ast.expr) -> bool:
    """A decorator given arguments (`@step("Ask for approval", action=...)`) is most
    often a registry taking what it decorates (a playbook step, a route, a command):
    what it decorates is called through the registry, not by name. The standard
    library's wrappers that take arguments are not."""
    if not isinstance(decorator, ast.Call) or not (decorator.args or decorator.keywords):
        return False
    return _dotted(decorator).rsplit(".", 1)[-1] not in WRAPPERS_WITH_ARGUMENTS


def _dotted(node: ast.expr) -> str:
    """`a.b.c` of a name, an attribute chain or a call of one; '' for anything else."""
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if not isinstance(node, ast.Call) or not node.args:
        return None
    if _dotted(node.func).rsplit(".", 1)[-1] in REVERSING_CALLS:
        return _literal(node.args[0])  # reverse_lazy("name") as a setting's value
    return None


def _pattern(node: ast.JoinedStr) -> str:
    """An f-string as a regular expression: its literal parts, anything between."""
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            parts.append(re.escape(value.value))
        else:
            parts.append(".+")
    return "".join(parts)


def _as_json(facts: Facts) -> Facts:
    return {key: sorted(value) if isinstance(value, set) else value for key, value in facts.items()}
