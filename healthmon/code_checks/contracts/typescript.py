"""A frontend's TypeScript types, read with tree-sitter, as the fields a consumer
expects: interfaces and type aliases of object types, with optional (`?`) members,
unions with `null`/`undefined`, arrays (`T[]`, `Array<T>`), nested object literals,
string literal unions (an enum) and references to the file's other types.

A type this file does not declare (imported, generic) is read as "any type", so it
never causes a finding.
"""

from __future__ import annotations

from pathlib import Path

import tree_sitter_typescript
from tree_sitter import Language, Node, Parser

from healthmon.code_checks.contracts.documents import MAX_DEPTH, ContractUnreadable, Field

_LANGUAGE = Language(tree_sitter_typescript.language_typescript())
PRIMITIVES = {
    "string": "string",
    "number": "number",
    "bigint": "integer",
    "boolean": "boolean",
    "object": "object",
    "any": "any",
    "unknown": "any",
}
ARRAY_GENERICS = ("Array", "ReadonlyArray")


class TypeScriptTypes:
    """The declared types of one file, by name."""

    def __init__(self, checkout: Path, name: str) -> None:
        try:
            source = (checkout / name).read_bytes()
        except FileNotFoundError as error:
            raise ContractUnreadable("the file is not in the repository") from error
        except OSError as error:
            raise ContractUnreadable(str(error)) from error
        tree = Parser(_LANGUAGE).parse(source)
        if tree.root_node.has_error:
            row = _first_error(tree.root_node)
            raise ContractUnreadable(f"not valid TypeScript (near line {row})")
        self.declarations: dict[str, Node] = {}
        for node in _walk(tree.root_node):
            if node.type in ("interface_declaration", "type_alias_declaration"):
                name_node = node.child_by_field_name("name")
                if name_node is not None and name_node.text is not None:
                    self.declarations[name_node.text.decode()] = node

    def fields(self, name: str) -> tuple[Field, dict[str, Field]] | None:
        """The type `name` and its fields by dotted path; None when not declared."""
        declaration = self.declarations.get(name)
        if declaration is None:
            return None
        found: dict[str, Field] = {}
        body = declaration.child_by_field_name("body") or declaration.child_by_field_name("value")
        line = declaration.start_point[0] + 1
        if body is None:
            return Field("any", True, line=line), found
        root = self._type(body, "", True, line, found, frozenset({name}))
        return root, found

    def _type(
        self,
        node: Node,
        prefix: str,
        required: bool,
        line: int,
        found: dict[str, Field],
        seen: frozenset[str],
    ) -> Field:
        members = _union_members(node)
        kinds: set[str] = set()
        nullable, enum = False, []
        for member in members:
            kind = member.type
            text = (member.text or b"").decode()
            if kind == "literal_type":
                if text in ("null",):
                    nullable = True
                elif text == "undefined":
                    required = False
                elif text.startswith(("'", '"')):
                    kinds.add("string")
                    enum.append('"' + text[1:-1] + '"')
                elif text in ("true", "false"):
                    kinds.add("boolean")
                else:
                    kinds.add("number")
            elif kind == "predefined_type":
                if text in ("null", "undefined", "void"):
                    nullable = nullable or text == "null"
                    required = required and text == "null"
                else:
                    kinds.add(PRIMITIVES.get(text, "any"))
            elif kind in ("object_type", "interface_body"):
                kinds.add("object")
                self._members(member, prefix, found, seen)
            elif kind == "array_type":
                kinds.add("array")
                element = member.named_children[0]
                found[f"{prefix}[]"] = self._type(element, f"{prefix}[]", True, line, found, seen)
            elif kind == "generic_type" and _generic_name(member) in ARRAY_GENERICS:
                kinds.add("array")
                arguments = member.child_by_field_name("type_arguments")
                if arguments is not None and arguments.named_children:
                    element = arguments.named_children[0]
                    found[f"{prefix}[]"] = self._type(
                        element, f"{prefix}[]", True, line, found, seen
                    )
            elif (
                kind == "type_identifier"
                and text in self.declarations
                and text not in seen
                and len(seen) < MAX_DEPTH
            ):
                declaration = self.declarations[text]
                body = declaration.child_by_field_name("body") or declaration.child_by_field_name(
                    "value"
                )
                if body is None:
                    kinds.add("any")
                    continue
                inner = self._type(body, prefix, True, line, found, seen | {text})
                kinds |= set(inner.type.split("|"))
                nullable = nullable or inner.nullable
                enum += list(inner.enum or ())
            else:
                kinds.add("any")
        kinds = {"any"} if "any" in kinds else kinds
        return Field(
            "|".join(sorted(kinds)) or "any",
            required,
            nullable,
            tuple(sorted(enum)) if enum and kinds == {"string"} else None,
            line,
        )

    def _members(
        self, body: Node, prefix: str, found: dict[str, Field], seen: frozenset[str]
    ) -> None:
        for member in body.named_children:
            if member.type != "property_signature":
                continue
            name_node = member.child_by_field_name("name")
            annotation = member.child_by_field_name("type")
            if name_node is None or name_node.text is None:
                continue
            name = name_node.text.decode().strip("'\"")
            optional = any(child.type == "?" for child in member.children)
            path = f"{prefix}.{name}" if prefix else name
            line = member.start_point[0] + 1
            if annotation is None or not annotation.named_children:
                found[path] = Field("any", not optional, line=line)
                continue
            found[path] = self._type(
                annotation.named_children[0], path, not optional, line, found, seen
            )


def _union_members(node: Node) -> list[Node]:
    while node.type in ("parenthesized_type", "readonly_type") and node.named_children:
        node = node.named_children[0]
    if node.type != "union_type":
        return [node]
    return [member for child in node.named_children for member in _union_members(child)]


def _generic_name(node: Node) -> str:
    name = node.child_by_field_name("name")
    return (name.text or b"").decode() if name is not None else ""


def _walk(node: Node) -> list[Node]:
    found = []
    for child in node.named_children:
        found.append(child)
        if child.type in (
            "export_statement",
            "ambient_declaration",
            "statement_block",
            "module",
            "internal_module",
        ):
            found += _walk(child)
    return found


def _first_error(node: Node) -> int:
    for child in node.children:
        if child.type == "ERROR" or child.is_missing:
            return child.start_point[0] + 1
        if child.has_error:
            return _first_error(child)
    return node.start_point[0] + 1
