"""A run event contract (this product's: the event types and data keys `chat/events.py`
documents) against the code that renders events into the page's fragments.

The contract is the documenting module's docstring: one bullet per event type,
``- `type`: `{key, key: {...}, ...}` ...``, plus the keys named after "plus" in the
same bullet. The renderer module maps event types (`StreamEvent.Type.STATUS` or
`"status"`) to fragment templates (a dict of template names) and to context
functions (a dict of functions, each taking the event's data first). The keys an
event's data is read by are the literal keys of `data.get("key")`, `data["key"]` and
`"key" in data` in its context function and in the functions of the module it hands
the data on to (as it is, not one of its values). A function several event types
reach may read a key any one of them gives.

Reported:
- `event-key-not-in-contract` (high): a key read that no event type reaching the code
  documents;
- `event-type-not-rendered` (medium): documented, but no fragment renders it;
- `event-type-not-documented` (medium): rendered, but not in the contract;
- `event-template-missing` (high): a fragment template not in the repository.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from healthmon.code_checks import Reported, identity_of
from healthmon.code_checks.contracts.documents import ContractUnreadable
from healthmon.models import Finding

HIGH, MEDIUM = int(Finding.Severity.HIGH), int(Finding.Severity.MEDIUM)
_BULLET = re.compile(r"^\s*- `([a-z_][a-z0-9_]*)`: (.*)$")
_BRACES = re.compile(r"`\{(.*?)\}`")
TEMPLATE_SUFFIXES = (".html", ".txt", ".jinja", ".j2")
_PLUS = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class EventContract:
    keys: dict[str, set[str]] = field(default_factory=dict)  # type -> documented keys
    lines: dict[str, int] = field(default_factory=dict)


def read_contract(checkout: Path, name: str) -> EventContract:
    module = _parse(checkout, name)
    docstring = module.body[0] if module.body else None
    if not (
        isinstance(docstring, ast.Expr)
        and isinstance(docstring.value, ast.Constant)
        and isinstance(docstring.value.value, str)
    ):
        raise ContractUnreadable("the module has no docstring documenting the events")
    source = (checkout / name).read_text(encoding="utf-8").splitlines()
    contract = EventContract()
    bullets: dict[str, list[str]] = {}
    current = ""
    for number in range(docstring.lineno, (docstring.end_lineno or docstring.lineno) + 1):
        text = source[number - 1]
        match = _BULLET.match(text)
        if match:
            current = match.group(1)
            bullets[current], contract.lines[current] = [match.group(2)], number
        elif current and text.startswith("  ") and text.strip():
            bullets[current].append(text.strip())
        else:
            current = ""
    for event, parts in bullets.items():
        contract.keys[event] = _documented_keys(" ".join(parts))
    if not contract.keys:
        raise ContractUnreadable(
            "its docstring documents no event (no ``- `type`: `{keys}` `` line)"
        )
    return contract


def _documented_keys(text: str) -> set[str]:
    """The top-level keys of the bullet's first `{...}`, and those named after "plus"."""
    keys: set[str] = set()
    braces = _BRACES.search(text)
    if braces:
        keys |= set(_top_level(braces.group(1)))
    if "plus " in text:
        keys |= set(_PLUS.findall(text.split("plus ", 1)[1]))
    return keys


def _top_level(inside: str) -> list[str]:
    names, depth, current = [], 0, ""
    for character in inside + ",":
        if character == "{":
            depth += 1
        elif character == "}":
            depth -= 1
        if character == "," and depth == 0:
            name = current.split(":")[0].strip()
            if name and name != "...":
                names.append(name)
            current = ""
        else:
            current += character
    return names


@dataclass
class Renderers:
    # event type -> (its fragment template, line); -> (its context function, line)
    templates: dict[str, tuple[str, int]] = field(default_factory=dict)
    readers: dict[str, tuple[str, int]] = field(default_factory=dict)
    reads: dict[str, list[tuple[str, int, set[str]]]] = field(default_factory=dict)


def read_renderers(checkout: Path, name: str) -> Renderers:
    module = _parse(checkout, name)
    renderers = Renderers()
    functions = {node.name: node for node in module.body if isinstance(node, ast.FunctionDef)}
    for node in module.body:
        table = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if not isinstance(table, ast.Dict) or not table.keys:
            continue
        pairs = [(key, value) for key, value in zip(table.keys, table.values, strict=True)]
        events = [(_event_type(key), key.lineno if key else 0, value) for key, value in pairs]
        if any(event is None for event, _, _ in events):
            continue
        if all(_is_template(value) for _, _, value in events):
            for event, line, value in events:
                template = value.value if isinstance(value, ast.Constant) else ""
                renderers.templates[str(event)] = (str(template), line)
        elif all(isinstance(value, ast.Name) and value.id in functions for _, _, value in events):
            for event, line, value in events:
                function = value.id if isinstance(value, ast.Name) else ""
                renderers.readers[str(event)] = (function, line)
    reached: dict[str, set[str]] = {}  # function -> the event types whose data it reads
    parameters: dict[str, set[str]] = {}  # function -> its parameters holding the data
    for event, (function, _) in renderers.readers.items():
        _follow(functions, function, 0, event, (reached, parameters), set())
    for function, types in reached.items():
        for key, line in _keys_read(functions[function], parameters[function]):
            renderers.reads.setdefault(function, []).append((key, line, types))
    return renderers


def _follow(
    functions: dict[str, ast.FunctionDef],
    name: str,
    position: int | str,
    event: str,
    found: tuple[dict[str, set[str]], dict[str, set[str]]],
    visiting: set[tuple[str, str]],
) -> None:
    """Mark `name` (its parameter at `position`) as reading `event`'s data, and the
    functions it hands the data on to."""
    reached, parameters = found
    function = functions[name]
    parameter = _parameter(function, position)
    if parameter is None or (name, parameter) in visiting:
        return
    visiting.add((name, parameter))
    reached.setdefault(name, set()).add(event)
    parameters.setdefault(name, set()).add(parameter)
    aliases = _aliases(function, parameter)
    for node in ast.walk(function):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in functions
        ):
            continue
        for index, argument in enumerate(node.args):
            inner = argument.value if isinstance(argument, ast.Starred) else argument
            if isinstance(inner, ast.Name) and inner.id in aliases:
                _follow(functions, node.func.id, index, event, found, visiting)
        for keyword in node.keywords:
            if isinstance(keyword.value, ast.Name) and keyword.value.id in aliases and keyword.arg:
                _follow(functions, node.func.id, keyword.arg, event, found, visiting)


def _parameter(function: ast.FunctionDef, position: int | str) -> str | None:
    positional = [argument.arg for argument in (*function.args.posonlyargs, *function.args.args)]
    if isinstance(position, str):
        return (
            position
            if position in positional or any(a.arg == position for a in function.args.kwonlyargs)
            else None
        )
    if position < len(positional):
        return positional[position]
    return function.args.vararg.arg if function.args.vararg else None


def _aliases(function: ast.FunctionDef, parameter: str) -> set[str]:
    """Names holding the event's data itself: the parameter, `x = data or {}`, the
    items of `*parts`, a dict filled from it with `.update(...)`."""
    aliases = {parameter}
    for _ in range(3):  # a few rounds: an alias of an alias
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and _mentions_whole(node.value, aliases):
                aliases |= {target.id for target in node.targets if isinstance(target, ast.Name)}
            elif (
                isinstance(node, ast.For)
                and isinstance(node.target, ast.Name)
                and _is_name(node.iter, aliases)
            ):
                aliases.add(node.target.id)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "update"
                and isinstance(node.func.value, ast.Name)
                and any(_mentions_whole(argument, aliases) for argument in node.args)
            ):
                aliases.add(node.func.value.id)
    return aliases


def _is_name(node: ast.expr, names: set[str]) -> bool:
    return isinstance(node, ast.Name) and node.id in names


def _mentions_whole(node: ast.expr, names: set[str]) -> bool:
    """The expression is the data itself, or a copy of it (`data or {}`, `dict(data)`,
    a comprehension over `data.items()`), not one of its values."""
    if _is_name(node, names):
        return True
    if isinstance(node, ast.BoolOp):
        return any(_mentions_whole(value, names) for value in node.values)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return any(_mentions_whole(argument, names) for argument in node.args)
    if isinstance(node, ast.DictComp):
        return any(
            isinstance(generator.iter, ast.Call)
            and isinstance(generator.iter.func, ast.Attribute)
            and generator.iter.func.attr == "items"
            and _is_name(generator.iter.func.value, names)
            for generator in node.generators
        )
    return False


def _keys_read(function: ast.FunctionDef, parameters: set[str]) -> list[tuple[str, int]]:
    aliases: set[str] = set()
    for parameter in parameters:
        aliases |= _aliases(function, parameter)
    keys = []
    for node in ast.walk(function):
        key: ast.expr | None = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and _is_name(node.func.value, aliases)
            and node.args
        ):
            key = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_name(node.value, aliases):
            key = node.slice
        elif (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], (ast.In, ast.NotIn))
            and _is_name(node.comparators[0], aliases)
        ):
            key = node.left
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            keys.append((key.value, key.lineno))
    return keys


def _is_template(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.endswith(TEMPLATE_SUFFIXES)
    )


def _event_type(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Attribute) and node.attr.isupper():
        return node.attr.lower()
    return None


def _parse(checkout: Path, name: str) -> ast.Module:
    try:
        return ast.parse((checkout / name).read_text(encoding="utf-8"), filename=name)
    except FileNotFoundError as error:
        raise ContractUnreadable("the file is not in the repository") from error
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as error:
        raise ContractUnreadable(f"not valid Python: {error}") from error


def compare(
    name: str,
    contract_file: str,
    contract: EventContract,
    renderer_file: str,
    renderers: Renderers,
    files: dict[str, str],
) -> list[Reported]:
    """The event contract of `contract_file` against the renderers of `renderer_file`."""
    found: list[Reported] = []

    def report(
        rule: str, severity: int, file: str, subject: str, message: str, line: int | None
    ) -> None:
        identity = identity_of(name, rule, file, [subject], 1, 1)
        found.append(Reported(name, rule, severity, message, file, line, identity))

    rendered = set(renderers.templates) | set(renderers.readers)
    for event in sorted(set(contract.keys) - rendered):
        report(
            "event-type-not-rendered",
            MEDIUM,
            contract_file,
            event,
            f"The `{event}` event is documented, but no fragment in {renderer_file} renders it.",
            contract.lines[event],
        )
    for event in sorted(rendered - set(contract.keys)):
        line = (renderers.templates.get(event) or renderers.readers[event])[1]
        report(
            "event-type-not-documented",
            MEDIUM,
            renderer_file,
            event,
            f"The `{event}` event is rendered, but {contract_file} does not document it.",
            line,
        )
    for event, (template, line) in sorted(renderers.templates.items()):
        if not any(path == template or path.endswith("/" + template) for path in files):
            report(
                "event-template-missing",
                HIGH,
                renderer_file,
                f"{event} {template}",
                f"The `{event}` event is rendered with {template}, which is not in the repository.",
                line,
            )
    for function, reads in sorted(renderers.reads.items()):
        for key, line, events in reads:
            documented = [event for event in events if event in contract.keys]
            if not documented or any(key in contract.keys[event] for event in documented):
                continue
            which = ", ".join(f"`{event}`" for event in sorted(documented))
            report(
                "event-key-not-in-contract",
                HIGH,
                renderer_file,
                f"{function} {key}",
                f"{function}() reads `{key}` of the {which} event data, which {contract_file} "
                "does not document.",
                line,
            )
    return found
