"""A producer's contract as a `Shape` (its facts by key), and the schema a consumer's
mapping names in it (a component, an operation's response or request body).

OpenAPI: each operation (`GET /pets`), its parameters, request body and responses,
with their fields; a reference to a component stops there and the component
(`schema Pet`) is flattened once, travelling in the directions the operations that
use it give (a field removed from a schema only requests use is not a break for the
readers of responses). JSON Schema: the root and each `$defs`/`definitions` entry,
travelling both ways.
"""

from __future__ import annotations

from typing import Any

from healthmon.code_checks.contracts.documents import (
    METHODS,
    ContractUnreadable,
    Document,
    Field,
    Pointer,
    Shape,
    component_name,
    fields_of,
)

IN, OUT, BOTH = "in", "out", "both"
MEDIA_PREFERENCE = ("application/json", "application/problem+json")


def shape_of(document: Document) -> Shape:
    if document.is_openapi:
        return openapi_shape(document)
    return schema_shape(document)


def openapi_shape(document: Document) -> Shape:
    paths = document.content.get("paths")
    if not isinstance(paths, dict) or not paths:
        raise ContractUnreadable("an OpenAPI document without paths")
    shape = Shape()
    used: dict[str, set[str]] = {IN: set(), OUT: set()}
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            key = f"{method.upper()} {path}"
            where: Pointer = ("paths", str(path), method)
            shape.add(key, {"kind": "operation", "parent": None}, document.line(where))
            _parameters(
                document, shape, key, where, [*shared, *(operation.get("parameters") or [])]
            )
            body = operation.get("requestBody")
            if isinstance(body, dict):
                schema, at = _media_schema(body, (*where, "requestBody"))
                if schema is not None:
                    used[IN] |= _references(schema)
                    _schema_facts(
                        document,
                        shape,
                        f"{key} request body",
                        key,
                        schema,
                        at,
                        IN,
                        required=bool(body.get("required")),
                        kind="request",
                    )
            for status, response in (operation.get("responses") or {}).items():
                if not isinstance(response, dict):
                    continue
                schema, at = _media_schema(response, (*where, "responses", str(status)))
                name = f"{key} response {status}"
                if schema is None:
                    shape.add(
                        name, {"kind": "response", "parent": key, "dir": OUT}, document.line(at)
                    )
                    continue
                used[OUT] |= _references(schema)
                _schema_facts(
                    document, shape, name, key, schema, at, OUT, required=True, kind="response"
                )
    schemas = (document.content.get("components") or {}).get("schemas") or {}
    directions = _directions(schemas, used)
    for name, schema in schemas.items():
        at = ("components", "schemas", str(name))
        _schema_facts(
            document,
            shape,
            f"schema {name}",
            None,
            schema,
            at,
            directions.get(name, BOTH),
            required=True,
        )
    return shape


def schema_shape(document: Document) -> Shape:
    content = document.content
    if not any(
        key in content
        for key in ("type", "properties", "$ref", "allOf", "oneOf", "anyOf", "$defs", "definitions")
    ):
        raise ContractUnreadable("neither an OpenAPI document (no `openapi`) nor a JSON Schema")
    shape = Shape()
    _schema_facts(document, shape, "schema (root)", None, content, (), BOTH, required=True)
    for keyword in ("$defs", "definitions"):
        for name, schema in (content.get(keyword) or {}).items():
            _schema_facts(
                document,
                shape,
                f"schema {name}",
                None,
                schema,
                (keyword, str(name)),
                BOTH,
                required=True,
            )
    return shape


def _parameters(
    document: Document, shape: Shape, operation: str, where: Pointer, parameters: list[Any]
) -> None:
    for index, parameter in enumerate(parameters):
        at: Pointer = (*where, "parameters", str(index))
        if isinstance(parameter, dict) and "$ref" in parameter:
            reference = str(parameter["$ref"])
            at = tuple(reference[2:].split("/"))
            parameter = document.at(at)
        if not isinstance(parameter, dict) or "name" not in parameter:
            continue
        root, _ = fields_of(document, parameter.get("schema") or {}, (*at, "schema"), inline=False)
        name = f"{operation} parameter {parameter['name']} ({parameter.get('in', 'query')})"
        fact = Field(root.type, bool(parameter.get("required")), root.nullable, root.enum)
        shape.add(name, fact.fact(operation, IN), document.line(at))


def _media_schema(holder: dict[str, Any], where: Pointer) -> tuple[Any, Pointer]:
    content = holder.get("content")
    if not isinstance(content, dict) or not content:
        return None, where
    media = next((m for m in MEDIA_PREFERENCE if m in content), next(iter(content)))
    schema = (content.get(media) or {}).get("schema")
    return schema, (*where, "content", str(media), "schema")


def _schema_facts(
    document: Document,
    shape: Shape,
    name: str,
    parent: str | None,
    schema: Any,
    at: Pointer,
    direction: str,
    *,
    required: bool,
    kind: str = "schema",
) -> None:
    root, found = fields_of(document, schema, at, inline=False)
    fact = Field(root.type, required, root.nullable, root.enum).fact(parent or "", direction)
    fact["parent"], fact["kind"] = parent, kind
    shape.add(name, fact, document.line(at))
    for path, item in found.items():
        owner = path.rpartition(".")[0] if "." in path else ""
        if path.endswith("[]"):
            owner = path[:-2]
        shape.add(
            f"{name}: {path}",
            item.fact(f"{name}: {owner}" if owner else name, direction),
            item.line,
        )


def _references(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        reference = schema.get("$ref")
        if isinstance(reference, str) and component_name(reference):
            found.add(component_name(reference))
        for value in schema.values():
            found |= _references(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= _references(value)
    return found


def _directions(schemas: dict[str, Any], used: dict[str, set[str]]) -> dict[str, str]:
    """Each component's direction: what reaches it from requests and from responses."""
    reach: dict[str, set[str]] = {}
    for way, roots in used.items():
        pending, seen = list(roots), set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            pending += _references(schemas.get(name))
        for name in seen:
            reach.setdefault(name, set()).add(way)
    return {name: (BOTH if len(ways) > 1 else next(iter(ways))) for name, ways in reach.items()}


def target_fields(document: Document, target: str) -> tuple[Field, dict[str, Field]] | None:
    """The schema `target` names, flattened through its references: a component
    (`Pet`, `#/components/schemas/Pet`, `#/$defs/Owner`), `#` (a JSON Schema's root),
    `GET /pets 200` (a response) or `POST /pets request`; None when there is none."""
    target = target.strip()
    at: Pointer | None = None
    if target.startswith("#"):
        at = tuple(part for part in target[1:].split("/") if part)
    elif " " in target:
        method, _, rest = target.partition(" ")
        path, _, part = rest.rpartition(" ")
        where: Pointer = ("paths", path, method.lower())
        holder = document.at(
            (*where, "requestBody") if part == "request" else (*where, "responses", part)
        )
        if not isinstance(holder, dict):
            return None
        schema, at = _media_schema(
            holder, where + (("requestBody",) if part == "request" else ("responses", part))
        )
        if schema is None:
            return None
    else:
        for base in (("components", "schemas"), ("$defs",), ("definitions",)):
            if isinstance(document.at((*base, target)), dict):
                at = (*base, target)
                break
    if at is None or not isinstance(document.at(at), dict):
        return None
    return fields_of(document, document.at(at), at)
