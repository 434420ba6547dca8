"""Contract documents (OpenAPI 3 and JSON Schema, in YAML or JSON) read into shapes.

A document is read with the line of every key and list item, so that a finding can
point at the line where a field is declared. A schema is flattened into `Field`s by
dotted path (`owner.name`, `tags[]` for an array's items): its type, whether it is
required, nullable, and its enum. Local `$ref`s (`#/components/schemas/Pet`,
`#/$defs/Owner`) are followed; a reference to another file is read as "any type".

A document's `Shape` is its facts by a human-readable key (`GET /pets`,
`GET /pets response 200: owner.name`, `schema Pet: tags[]`) with the direction each
one travels (`in`: the producer reads it, `out`: the producer emits it, `both`): what
the check keeps between scans to see breaking changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
COMPONENT_PREFIXES = ("#/components/schemas/", "#/$defs/", "#/definitions/")
MAX_DEPTH = 12  # nested objects followed this deep; deeper ones are read as "any"

Pointer = tuple[str, ...]


class ContractUnreadable(Exception):
    """The file is missing or is not a contract this check can read."""


@dataclass
class Document:
    path: str
    content: Any
    lines: dict[Pointer, int]  # JSON pointer -> 1-based line of its key or item

    def line(self, pointer: Pointer) -> int | None:
        while pointer:
            if pointer in self.lines:
                return self.lines[pointer]
            pointer = pointer[:-1]
        return None

    def at(self, pointer: Pointer) -> Any:
        node = self.content
        for part in pointer:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    @property
    def is_openapi(self) -> bool:
        return isinstance(self.content, dict) and "openapi" in self.content


@dataclass(frozen=True)
class Field:
    type: str  # "string", "integer|string", "object", "array", "any"...
    required: bool
    nullable: bool = False
    enum: tuple[str, ...] | None = None
    line: int | None = None
    open: bool = False  # an object whose properties are not listed: anything goes

    def fact(self, parent: str, direction: str) -> dict[str, Any]:
        fact: dict[str, Any] = {"type": self.type, "required": self.required}
        fact |= {"parent": parent, "dir": direction}
        if self.enum is not None:
            fact["enum"] = list(self.enum)
        return fact


@dataclass
class Shape:
    """A document's facts by key (JSON, kept in the check's state) and their lines."""

    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, int | None] = field(default_factory=dict)

    def add(self, key: str, fact: dict[str, Any], line: int | None) -> None:
        self.facts[key] = fact
        self.lines[key] = line

    def line_near(self, key: str, previous: dict[str, dict[str, Any]]) -> int | None:
        """The line of `key`, or of its nearest ancestor still in the document."""
        seen: set[str] = set()
        while key and key not in seen:
            seen.add(key)
            if key in self.lines:
                return self.lines[key]
            key = (self.facts.get(key) or previous.get(key) or {}).get("parent") or ""
        return None


def read(checkout: Path, name: str) -> Document:
    """The document `name` of the checkout, with its lines; `ContractUnreadable`."""
    try:
        text = (checkout / name).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ContractUnreadable("the file is not in the repository") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ContractUnreadable(str(error)) from error
    try:
        content = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        kind = "JSON" if name.endswith(".json") else "YAML"
        raise ContractUnreadable(f"not valid {kind}: {_first_line(error)}") from error
    if not isinstance(content, dict):
        raise ContractUnreadable("the document is not a mapping of keys")
    try:
        lines = _lines(yaml.compose(text))
    except yaml.YAMLError:
        lines = {}  # JSON that YAML reads otherwise: findings point at the file
    return Document(path=name, content=content, lines=lines)


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]


def _lines(node: yaml.Node | None, pointer: Pointer = ()) -> dict[Pointer, int]:
    lines: dict[Pointer, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*pointer, str(key.value))
            lines[child] = key.start_mark.line + 1
            lines |= _lines(value, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            child = (*pointer, str(index))
            lines[child] = value.start_mark.line + 1
            lines |= _lines(value, child)
    return lines


# -- schemas ---------------------------------------------------------------------------


def resolve(document: Document, schema: Any, pointer: Pointer) -> tuple[Any, Pointer, str]:
    """`schema` with its local $ref followed: (schema, where it lives, the component
    name when it was a reference to one, else '')."""
    name = ""
    for _ in range(MAX_DEPTH):
        if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
            break
        reference = schema["$ref"]
        if not reference.startswith("#"):
            return {}, pointer, name  # another file: read as any type
        pointer = tuple(
            part.replace("~1", "/").replace("~0", "~") for part in reference[2:].split("/") if part
        )
        name = component_name(reference) or name
        schema = document.at(pointer)
    return (schema if isinstance(schema, dict) else {}), pointer, name


def component_name(reference: str) -> str:
    for prefix in COMPONENT_PREFIXES:
        if reference.startswith(prefix):
            return reference[len(prefix) :]
    return ""


def fields_of(
    document: Document, schema: Any, pointer: Pointer, *, inline: bool = True
) -> tuple[Field, dict[str, Field]]:
    """The schema's own type, and its fields by dotted path. Without `inline`, a
    reference to a component stops there (the component is flattened on its own)."""
    found: dict[str, Field] = {}
    root = _walk(document, schema, pointer, "", True, found, inline, frozenset(), 0)
    return root, found


def _walk(
    document: Document,
    schema: Any,
    pointer: Pointer,
    prefix: str,
    required: bool,
    found: dict[str, Field],
    inline: bool,
    seen: frozenset[str],
    depth: int,
) -> Field:
    line = document.line(pointer) if pointer else None
    reference = schema.get("$ref") if isinstance(schema, dict) else None
    schema, pointer, name = resolve(document, schema, pointer)
    if isinstance(reference, str) and name and (not inline or name in seen or depth > MAX_DEPTH):
        return Field(_types(schema) or "object", required, _nullable(schema), line=line, open=True)
    seen = seen | {name} if name else seen
    merged = _merged(document, schema, pointer)
    types = _types(merged)
    properties = merged.get("properties") or {}
    if not types and properties:
        types = "object"
    enum = merged.get("enum")
    this = Field(
        types or "any",
        required,
        _nullable(merged),
        tuple(sorted(json.dumps(value) for value in enum)) if isinstance(enum, list) else None,
        line,
        open=types in ("object", "any", "") and not properties,
    )
    needed = set(merged.get("required") or ())
    for key, child in properties.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        where = merged.get("__pointers__", {}).get(key, (*pointer, "properties", str(key)))
        found[path] = _walk(
            document, child, where, path, key in needed, found, inline, seen, depth + 1
        )
    items = merged.get("items")
    if "array" in this.type.split("|") and isinstance(items, dict):
        found[f"{prefix}[]"] = _walk(
            document,
            items,
            (*pointer, "items"),
            f"{prefix}[]",
            True,
            found,
            inline,
            seen,
            depth + 1,
        )
    return this


def _merged(document: Document, schema: dict[str, Any], pointer: Pointer) -> dict[str, Any]:
    """allOf's members merged into one schema; oneOf/anyOf as the union of their
    types with every property optional (only one member applies)."""
    merged = {key: value for key, value in schema.items() if key not in ("allOf", "oneOf", "anyOf")}
    pointers: dict[str, Pointer] = {
        key: (*pointer, "properties", key) for key in merged.get("properties") or {}
    }
    properties = dict(merged.get("properties") or {})
    required = list(merged.get("required") or ())
    types = set(filter(None, _types(merged).split("|")))
    for keyword in ("allOf", "oneOf", "anyOf"):
        members = schema.get(keyword)
        if not isinstance(members, list):
            continue
        for index, member in enumerate(members):
            member, where, _ = resolve(document, member, (*pointer, keyword, str(index)))
            inner = _merged(document, member, where)
            for key, value in (inner.get("properties") or {}).items():
                properties.setdefault(key, value)
                pointers.setdefault(
                    key, inner["__pointers__"].get(key, (*where, "properties", key))
                )
            if keyword == "allOf":
                required += list(inner.get("required") or ())
            types |= set(filter(None, _types(inner).split("|")))
            if _nullable(inner):
                merged["nullable"] = True
            if "items" in inner:
                merged.setdefault("items", inner["items"])
    if "null" in types:
        types.discard("null")
        merged["nullable"] = True
    merged["properties"], merged["required"] = properties, required
    merged["__pointers__"] = pointers
    if types:
        merged["type"] = sorted(types)
    return merged


def _types(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    names = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    return "|".join(sorted(str(name) for name in names if name != "null"))


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return bool(schema.get("nullable")) or (isinstance(kind, list) and "null" in kind)
