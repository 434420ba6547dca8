"""Which contracts a repository names, and where its consumers' expectations live.

Read from `.codehealth.toml` at the repository's root (its `[contracts]` table) or,
without that file, from `[tool.codehealth.contracts]` in its `pyproject.toml`; the
repository's `settings["contracts"]` (set by an Operator in the admin) replaces any
key it gives. The keys:

    producers = ["api/openapi.yaml", "schemas/order.schema.json"]

    [[tool.codehealth.contracts.consumers]]
    file = "web/src/api/types.ts"          # TypeScript types, or a JSON Schema
    producer = "api/openapi.yaml"          # one of the producers
    types = { Pet = "Pet", PetPage = "GET /pets 200", NewPet = "POST /pets request" }

    [tool.codehealth.contracts.events]     # a run event contract (this product's)
    contract = "chat/events.py"
    renderer = "chat/rendering.py"

In `types`, a key is a consumer type: a TypeScript interface or type alias, or a
JSON pointer into the consumer's schema (`#`, `#/$defs/Owner`); a value is a
producer schema: a component name, a JSON pointer, `METHOD /path STATUS` (a
response) or `METHOD /path request` (a request body).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OWN_FILE = ".codehealth.toml"
PYPROJECT = "pyproject.toml"
FILES = (OWN_FILE, PYPROJECT)


class ConfigurationInvalid(Exception):
    def __init__(self, file: str, reason: str) -> None:
        super().__init__(reason)
        self.file = file


@dataclass(frozen=True)
class Consumer:
    file: str
    producer: str
    types: dict[str, str]


@dataclass
class Contracts:
    producers: list[str] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    events: tuple[str, str] | None = None  # (contract, renderer)
    source: str = ""  # the file it came from, for findings about it
    raw: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[str]:
        """Every file the check reads: when none changed, its results still hold."""
        named = [*self.producers, *(consumer.file for consumer in self.consumers)]
        return [*named, *(self.events or ())]

    def fingerprint(self) -> str:
        return hashlib.sha256(
            json.dumps(self.raw, sort_keys=True, default=str).encode()
        ).hexdigest()


def read_configuration(checkout: Path, overrides: Any) -> Contracts:
    """The repository's contracts; `ConfigurationInvalid` when they cannot be read."""
    table: dict[str, Any] = {}
    source = ""
    if (checkout / OWN_FILE).is_file():
        table, source = _table(checkout, OWN_FILE, ("contracts",)), OWN_FILE
    elif (checkout / PYPROJECT).is_file():
        table, source = _table(checkout, PYPROJECT, ("tool", "codehealth", "contracts")), PYPROJECT
    if isinstance(overrides, dict) and isinstance(overrides.get("contracts"), dict):
        table = {**table, **overrides["contracts"]}
        source = source or "(repository settings)"
    return _parsed(table, source)


def _table(checkout: Path, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        document: Any = tomllib.loads((checkout / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationInvalid(name, f"not valid TOML: {error}") from error
    for key in keys:
        document = document.get(key) if isinstance(document, dict) else None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigurationInvalid(name, f"[{'.'.join(keys)}] is not a table")
    return document


def _parsed(table: dict[str, Any], source: str) -> Contracts:
    def invalid(reason: str) -> ConfigurationInvalid:
        return ConfigurationInvalid(source, reason)

    producers = table.get("producers", [])
    if not (isinstance(producers, list) and all(isinstance(p, str) and p for p in producers)):
        raise invalid("`producers` must be a list of file paths")
    consumers = []
    for index, item in enumerate(table.get("consumers") or []):
        if not isinstance(item, dict):
            raise invalid(f"consumer #{index + 1} is not a table")
        file, producer, types = item.get("file"), item.get("producer"), item.get("types") or {}
        if not isinstance(file, str) or not file:
            raise invalid(f"consumer #{index + 1} has no `file`")
        if producer not in producers:
            raise invalid(f"consumer {file}: `producer` must name one of the producers")
        if not isinstance(types, dict) or not all(isinstance(v, str) for v in types.values()):
            raise invalid(f"consumer {file}: `types` must map consumer types to producer schemas")
        consumers.append(Consumer(file, str(producer), {str(k): v for k, v in types.items()}))
    events = table.get("events")
    pair = None
    if events is not None:
        contract, renderer = (
            (events.get("contract"), events.get("renderer"))
            if isinstance(events, dict)
            else (None, None)
        )
        if not (isinstance(contract, str) and isinstance(renderer, str) and contract and renderer):
            raise invalid("`events` needs `contract` and `renderer` (two Python files)")
        pair = (contract, renderer)
    return Contracts(producers, consumers, pair, source, table)
