from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chat.models import StreamEvent
from healthmon import code_findings
from healthmon.code_checks.contracts import events
from healthmon.code_checks.contracts.config import read_configuration
from healthmon.code_checks.contracts.documents import ContractUnreadable
from healthmon.code_checks.contracts.typescript import TypeScriptTypes
from healthmon.code_scans import scan_repository
from healthmon.models import Finding, Repository, Scan
from tests.healthmon.code_repos import commit, git, make_repository

CONFIG = """\
[contracts]
producers = ["api/openapi.yaml"]

[[contracts.consumers]]
file = "web/types.ts"
producer = "api/openapi.yaml"
types = { Pet = "Pet", PetPage = "GET /pets 200" }
"""

OPENAPI = """\
openapi: 3.0.3
info: {title: Pets, version: "1"}
paths:
  /pets:
    get:
      parameters:
        - name: limit
          in: query
          schema: {type: integer}
      responses:
        "200":
          content:
            application/json:
              schema:
                type: object
                required: [items]
                properties:
                  items:
                    type: array
                    items: {$ref: "#/components/schemas/Pet"}
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                name: {type: string}
                nickname: {type: string}
      responses:
        "201": {description: created}
  /pets/{id}:
    delete:
      responses:
        "204": {description: gone}
components:
  schemas:
    Pet:
      type: object
      required: [id, name, status]
      properties:
        id: {type: integer}
        name: {type: string}
        status: {type: string, enum: [available, sold]}
        tag: {type: string, nullable: true}
"""

TYPES = """\
export interface Pet {
  id: number;
  name: string;
  status: "available" | "sold";
  tag?: string | null;
}

export type PetPage = { items: Pet[] };
"""


def _scan(repository: Repository) -> Scan:
    scan = scan_repository(repository)
    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    return scan


def _open(repository: Repository) -> dict[str, Finding]:
    return {
        f.message: f
        for f in repository.findings.filter(check_name="contracts", status=Finding.Status.OPEN)
    }


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "high"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    files = {".codehealth.toml": CONFIG, "api/openapi.yaml": OPENAPI, "web/types.ts": TYPES}
    return make_repository(tmp_path / "app", files)


@pytest.fixture
def repository(db: Any, source: Path) -> Repository:
    return Repository.objects.create(name="app", path=str(source))


def test_the_first_scan_records_the_contract_and_reports_nothing(
    repository: Repository,
) -> None:
    scan = _scan(repository)

    assert scan.summary["contracts"]["reported"] == 0
    assert "GET /pets" in scan.state["checks"]["contracts"]["shapes"]["api/openapi.yaml"]


@pytest.mark.parametrize(
    ("old", "new", "rule", "severity", "message", "line"),
    [
        (
            '  /pets/{id}:\n    delete:\n      responses:\n        "204": {description: gone}\n',
            "",
            "removed-operation",
            Finding.Severity.HIGH,
            "Breaking change: DELETE /pets/{id} was removed.",
            None,
        ),
        (
            '        "201": {description: created}\n',
            "",
            "removed-response",
            Finding.Severity.HIGH,
            "Breaking change: POST /pets response 201 was removed.",
            21,
        ),
        (
            "        tag: {type: string, nullable: true}\n",
            "",
            "removed-field",
            Finding.Severity.HIGH,
            "Breaking change: schema Pet: tag was removed.",
            38,
        ),
        (
            "        id: {type: integer}\n",
            "        id: {type: string}\n",
            "changed-type",
            Finding.Severity.HIGH,
            "Breaking change: schema Pet: id changed type from integer to string.",
            42,
        ),
        (
            "            schema:\n              type: object\n              properties:\n",
            "            schema:\n              type: object\n              required: [name]\n"
            "              properties:\n",
            "new-required",
            Finding.Severity.HIGH,
            "Breaking change: POST /pets request body: name became required.",
            29,
        ),
        (
            "          in: query\n",
            "          in: query\n          required: true\n",
            "new-required",
            Finding.Severity.HIGH,
            "Breaking change: GET /pets parameter limit (query) became required.",
            7,
        ),
        (
            "enum: [available, sold]",
            "enum: [available]",
            "removed-enum-value",
            Finding.Severity.MEDIUM,
            'Breaking change: schema Pet: status no longer allows the value "sold".',
            44,
        ),
        (
            "                nickname: {type: string}\n",
            "",
            "removed-field",
            Finding.Severity.MEDIUM,
            "Breaking change: POST /pets request body: nickname was removed.",
            25,
        ),
    ],
)
def test_each_kind_of_breaking_change_is_found_on_the_next_scan(
    repository: Repository,
    source: Path,
    old: str,
    new: str,
    rule: str,
    severity: int,
    message: str,
    line: int | None,
) -> None:
    _scan(repository)
    assert old in OPENAPI
    commit(source, {"api/openapi.yaml": OPENAPI.replace(old, new)})

    scan = _scan(repository)

    findings = [f for f in repository.findings.filter(check_name="contracts") if f.rule == rule]
    assert [(f.message, f.severity, f.file) for f in findings] == [
        (message, severity, "api/openapi.yaml")
    ]
    if line is not None:
        assert findings[0].line == line
    assert scan.summary["contracts"]["new"] >= 1


def test_a_breaking_change_stays_until_the_contract_is_restored(
    repository: Repository, source: Path
) -> None:
    _scan(repository)
    commit(source, {"api/openapi.yaml": OPENAPI.replace("        id: {type: integer}\n", "")})
    _scan(repository)
    commit(source, {"README.md": "unrelated\n"})

    again = _scan(repository)

    finding = repository.findings.get(rule="removed-field")
    assert finding.status == Finding.Status.OPEN
    assert again.summary["contracts"]["open"] >= 1
    commit(source, {"api/openapi.yaml": OPENAPI})
    _scan(repository)
    finding.refresh_from_db()
    assert finding.status == Finding.Status.FIXED


def test_a_breaking_change_marked_intended_is_not_reported_again(
    repository: Repository, source: Path
) -> None:
    _scan(repository)
    commit(source, {"api/openapi.yaml": OPENAPI.replace("        id: {type: integer}\n", "")})
    _scan(repository)
    finding = repository.findings.get(rule="removed-field")
    code_findings.mark_intended(finding)
    commit(
        source, {"api/openapi.yaml": OPENAPI.replace("        id: {type: integer}\n", "") + "\n"}
    )

    scan = _scan(repository)

    assert "removed-field" not in {f.rule for f in _open(repository).values()}
    assert scan.state["checks"]["contracts"]["pending"] == []
    finding.refresh_from_db()
    assert finding.status == Finding.Status.INTENDED


def test_a_breaking_change_keeps_its_identity_when_lines_move(
    repository: Repository, source: Path
) -> None:
    _scan(repository)
    broken = OPENAPI.replace("        id: {type: integer}\n", "        id: {type: string}\n")
    commit(source, {"api/openapi.yaml": broken})
    _scan(repository)
    first = repository.findings.get(rule="changed-type")
    moved = broken.replace("info:", "# The pet store's API.\n# Kept by the web team.\ninfo:")
    commit(source, {"api/openapi.yaml": moved})

    _scan(repository)

    again = repository.findings.get(rule="changed-type")
    assert (again.pk, again.status, again.line) == (first.pk, Finding.Status.OPEN, first.line + 2)


def test_a_consumer_that_agrees_with_the_producer_has_no_finding(
    repository: Repository,
) -> None:
    _scan(repository)

    assert _open(repository) == {}


def test_a_typescript_consumer_reading_what_the_producer_does_not_give(
    repository: Repository, source: Path
) -> None:
    types = TYPES.replace("  id: number;\n", "  id: string;\n  owner: { name: string };\n")
    types = types.replace("tag?: string | null", "tag: string")
    commit(source, {"web/types.ts": types})

    _scan(repository)

    found = {(f.rule, f.line, f.severity) for f in _open(repository).values()}
    assert found == {
        ("consumer-type-mismatch", 2, Finding.Severity.HIGH),
        ("consumer-reads-missing", 3, Finding.Severity.HIGH),
        ("consumer-requires-optional", 6, Finding.Severity.MEDIUM),
        ("consumer-not-nullable", 6, Finding.Severity.MEDIUM),
    }
    messages = "\n".join(_open(repository))
    assert "Pet.owner is read by the consumer, but api/openapi.yaml Pet does not emit" in messages
    assert "PetPage.items[].owner" in messages  # through the response's $ref


def test_a_field_the_producer_stops_emitting_is_a_break_and_a_consumer_mismatch(
    repository: Repository, source: Path
) -> None:
    _scan(repository)
    removed = OPENAPI.replace("        name: {type: string}\n        status", "        status")
    commit(source, {"api/openapi.yaml": removed})

    _scan(repository)

    rules = sorted(f.rule for f in _open(repository).values())
    assert rules == ["consumer-reads-missing", "consumer-reads-missing", "removed-field"]


def test_a_json_schema_consumer_is_checked_through_its_refs(db: Any, tmp_path: Path) -> None:
    producer = """{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id"],
  "properties": {"id": {"type": "integer"}, "total": {"type": "number"}}
}
"""
    consumer = """{
  "$defs": {"Money": {"type": "string"}},
  "type": "object",
  "required": ["id", "total"],
  "properties": {
    "id": {"type": "integer"},
    "total": {"$ref": "#/$defs/Money"},
    "currency": {"type": "string"}
  }
}
"""
    config = (
        '[tool.codehealth.contracts]\nproducers = ["order.schema.json"]\n'
        '[[tool.codehealth.contracts.consumers]]\nfile = "billing/order.json"\n'
        'producer = "order.schema.json"\ntypes = { "#" = "#" }\n'
    )
    source = make_repository(
        tmp_path / "orders",
        {"pyproject.toml": config, "order.schema.json": producer, "billing/order.json": consumer},
    )
    repository = Repository.objects.create(name="orders", path=str(source))

    _scan(repository)

    found = {(f.rule, f.line) for f in _open(repository).values()}
    assert found == {
        ("consumer-type-mismatch", 7),
        ("consumer-requires-optional", 7),
        ("consumer-reads-missing", 8),
    }
    fixed = consumer.replace('{"$ref": "#/$defs/Money"}', '{"type": "number"}')
    fixed = fixed.replace(',\n    "currency": {"type": "string"}', "")
    fixed = fixed.replace('["id", "total"]', '["id"]')
    commit(source, {"billing/order.json": fixed})
    _scan(repository)
    assert _open(repository) == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("openapi: 3.0.3\npaths: [unclosed\n", "not valid YAML"),
        ("openapi: 3.0.3\ninfo: {title: x, version: '1'}\n", "an OpenAPI document without paths"),
        (None, "the file is not in the repository"),
    ],
)
def test_a_contract_that_cannot_be_read_is_a_finding_not_a_failed_scan(
    db: Any, tmp_path: Path, text: str | None, reason: str
) -> None:
    files = {".codehealth.toml": '[contracts]\nproducers = ["api/openapi.yaml"]\n'}
    if text is not None:
        files["api/openapi.yaml"] = text
    source = make_repository(tmp_path / "broken", files)
    repository = Repository.objects.create(name="broken", path=str(source))

    scan = _scan(repository)

    finding = repository.findings.get(check_name="contracts")
    assert finding.rule == "unreadable"
    assert finding.severity == Finding.Severity.HIGH
    assert finding.message.startswith(f"api/openapi.yaml cannot be read: {reason}")
    assert scan.summary["contracts"]["new"] == 1


def test_a_contract_broken_and_mended_is_compared_with_its_last_good_shape(
    repository: Repository, source: Path
) -> None:
    _scan(repository)
    commit(source, {"api/openapi.yaml": "openapi: [\n"})
    _scan(repository)
    assert [f.rule for f in _open(repository).values()] == ["unreadable"]
    commit(
        source,
        {"api/openapi.yaml": OPENAPI.replace("                nickname: {type: string}\n", "")},
    )

    _scan(repository)

    assert [f.rule for f in _open(repository).values()] == ["removed-field"]


def test_an_invalid_configuration_is_a_finding(db: Any, tmp_path: Path) -> None:
    config = '[contracts]\nproducers = "api.yaml"\n'
    source = make_repository(tmp_path / "conf", {".codehealth.toml": config})
    repository = Repository.objects.create(name="conf", path=str(source))

    _scan(repository)

    finding = repository.findings.get(check_name="contracts")
    assert (finding.rule, finding.file) == ("unreadable", ".codehealth.toml")
    assert "`producers` must be a list of file paths" in finding.message


def test_repository_settings_name_the_contracts(db: Any, tmp_path: Path) -> None:
    source = make_repository(tmp_path / "set", {"api.json": '{"openapi": "3.1.0"}'})
    repository = Repository.objects.create(
        name="set", path=str(source), settings={"contracts": {"producers": ["api.json"]}}
    )

    _scan(repository)

    finding = repository.findings.get(check_name="contracts")
    assert finding.message == "api.json cannot be read: an OpenAPI document without paths"


def test_an_unchanged_contract_is_not_read_again(
    repository: Repository, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(source, {"web/types.ts": TYPES.replace("  id: number;\n", "  id: string;\n")})
    _scan(repository)
    commit(source, {"app.py": "VALUE = 1\n"})

    def refuse(*arguments: Any) -> None:
        raise AssertionError("read a contract that did not change")

    monkeypatch.setattr("healthmon.code_checks.contracts.check", refuse)
    scan = _scan(repository)

    assert scan.summary["contracts"] == {
        "reported": 2,
        "new": 0,
        "open": 2,
        "fixed": 0,
        "intended": 0,
        "ignored": 0,
    }


EVENTS_MODULE = '''"""The run event stream.

Event data (what the page renders)
----------------------------------

- `status`: `{status, detail}`; status is one of idle, thinking.
- `tool_result`: `{execution_id, tool, outcome,
  error}`; outcome ok or error.
- `budget`: `{steps, cost}`, each `{used, limit}`, plus `retries: {fingerprint: count}`
  and `retry_limit`.
- `stop_reason`: `{reason, next_action: {label, kind, ...}}`.
"""

def emit(run_id, type, data=None):
    return None
'''

RENDERING_MODULE = '''"""Events to fragments."""

FRAGMENTS = {
    StreamEvent.Type.STATUS: "chat/partials/status.html",
    StreamEvent.Type.TOOL_RESULT: "chat/partials/tool_result.html",
    StreamEvent.Type.BUDGET: "chat/partials/budget.html",
    StreamEvent.Type.STOP_REASON: "chat/partials/stop_reason.html",
}
LABELS = {"green": "ok", "red": "critical"}


def status_context(data):
    return {"status": data.get("status"), "detail": data["detail"]}


def tool_result_context(data):
    return {"tool": tool_row(data)}


def tool_row(*parts):
    merged = {}
    for part in parts:
        merged.update({key: value for key, value in part.items() if value})
    return {"id": merged.get("execution_id"), "has_error": "error" in merged}


def budget_context(data):
    retries = data.get("retries") or {}
    rows = sorted(({"count": count} for count in retries.values()), key=lambda row: row["count"])
    return {"steps": meter(data.get("steps") or {}), "rows": rows, "limit": data.get("retry_limit")}


def meter(values):
    return values.get("used")


def stop_reason_context(data, run_id=0):
    action = data.get("next_action") or {}
    return {"reason": data.get("reason"), "kind": action.get("kind")}


CONTEXTS = {
    StreamEvent.Type.STATUS: status_context,
    StreamEvent.Type.TOOL_RESULT: tool_result_context,
    StreamEvent.Type.BUDGET: budget_context,
    StreamEvent.Type.STOP_REASON: stop_reason_context,
}
'''

EVENTS_CONFIG = """\
[tool.codehealth.contracts.events]
contract = "chat/events.py"
renderer = "chat/rendering.py"
"""


@pytest.fixture
def product(db: Any, tmp_path: Path) -> tuple[Repository, Path]:
    files = {
        "pyproject.toml": EVENTS_CONFIG,
        "chat/events.py": EVENTS_MODULE,
        "chat/rendering.py": RENDERING_MODULE,
        **{
            f"templates/chat/partials/{name}.html": "<div></div>\n"
            for name in ("status", "tool_result", "budget", "stop_reason")
        },
    }
    source = make_repository(tmp_path / "product", files)
    return Repository.objects.create(name="product", path=str(source)), source


def test_renderers_that_read_what_the_event_contract_gives_have_no_finding(
    product: tuple[Repository, Path],
) -> None:
    repository, _ = product

    _scan(repository)

    assert _open(repository) == {}


def test_a_fragment_reading_a_key_the_event_contract_does_not_give_is_reported(
    product: tuple[Repository, Path],
) -> None:
    repository, source = product
    reads_more = RENDERING_MODULE.replace(
        '"id": merged.get("execution_id")',
        '"id": merged.get("execution_id"), "ms": merged["duration_ms"]',
    )
    commit(source, {"chat/rendering.py": reads_more})

    _scan(repository)

    finding = repository.findings.get(check_name="contracts")
    assert (finding.rule, finding.file, finding.line, finding.severity) == (
        "event-key-not-in-contract",
        "chat/rendering.py",
        24,
        Finding.Severity.HIGH,
    )
    assert finding.message == (
        "tool_row() reads `duration_ms` of the `tool_result` event data, which chat/events.py "
        "does not document."
    )


def test_event_types_documented_but_not_rendered_and_rendered_but_not_documented(
    product: tuple[Repository, Path],
) -> None:
    repository, source = product
    documented = EVENTS_MODULE.replace(
        "- `stop_reason`", "- `token`: `{text}`, a piece of the reply.\n- `stop_reason`"
    )
    rendered = RENDERING_MODULE.replace(
        '    StreamEvent.Type.STOP_REASON: "chat/partials/stop_reason.html",\n',
        '    StreamEvent.Type.STOP_REASON: "chat/partials/stop_reason.html",\n'
        '    StreamEvent.Type.ERROR: "chat/partials/last_error.html",\n',
    )
    commit(source, {"chat/events.py": documented, "chat/rendering.py": rendered})

    _scan(repository)

    found = {(f.rule, f.file, f.line) for f in _open(repository).values()}
    assert found == {
        ("event-type-not-rendered", "chat/events.py", 11),
        ("event-type-not-documented", "chat/rendering.py", 8),
        ("event-template-missing", "chat/rendering.py", 8),
    }


def test_this_product_s_own_event_contract_holds() -> None:
    checkout = Path(__file__).resolve().parents[2]
    contracts = read_configuration(checkout, {})
    assert contracts.events == ("chat/events.py", "chat/rendering.py")
    contract = events.read_contract(checkout, "chat/events.py")
    renderers = events.read_renderers(checkout, "chat/rendering.py")
    assert set(contract.keys) == set(StreamEvent.Type.values)
    tracked = git(checkout, "ls-files").splitlines()

    found = events.compare(
        "contracts",
        "chat/events.py",
        contract,
        "chat/rendering.py",
        renderers,
        dict.fromkeys(tracked, ""),
    )

    assert found == []
    assert {"reason", "next_action"} <= {
        key for key, _, _ in renderers.reads["stop_reason_context"]
    }


def test_typescript_types_are_read_with_arrays_unions_and_references(tmp_path: Path) -> None:
    (tmp_path / "types.ts").write_text(
        "type Status = 'open' | 'closed';\n"
        "interface Owner { name: string; email?: string }\n"
        "export interface Ticket {\n"
        "  id: number;\n"
        "  status: Status;\n"
        "  owners: Array<Owner>;\n"
        "  note: string | undefined;\n"
        "  closedAt: string | null;\n"
        "  meta: { labels: readonly string[]; extra: Record<string, unknown> };\n"
        "}\n"
    )

    found = TypeScriptTypes(tmp_path, "types.ts").fields("Ticket")

    assert found is not None
    root, fields = found
    assert root.type == "object"
    shown = {path: (f.type, f.required, f.nullable, f.enum) for path, f in fields.items()}
    assert shown == {
        "id": ("number", True, False, None),
        "status": ("string", True, False, ('"closed"', '"open"')),
        "owners": ("array", True, False, None),
        "owners[]": ("object", True, False, None),
        "owners[].name": ("string", True, False, None),
        "owners[].email": ("string", False, False, None),
        "note": ("string", False, False, None),
        "closedAt": ("string", True, True, None),
        "meta": ("object", True, False, None),
        "meta.labels": ("array", True, False, None),
        "meta.labels[]": ("string", True, False, None),
        "meta.extra": ("any", True, False, None),
    }


def test_typescript_that_does_not_parse_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "types.ts").write_text("interface Broken {\n  id: number\n  name: \n")

    with pytest.raises(ContractUnreadable, match="not valid TypeScript"):
        TypeScriptTypes(tmp_path, "types.ts")


def test_a_json_schema_producer_s_breaking_changes_are_found(db: Any, tmp_path: Path) -> None:
    schema = (
        '{\n  "type": "object",\n  "required": ["id"],\n  "properties": {\n'
        '    "id": {"type": "integer"},\n    "total": {"type": "number"}\n  }\n}\n'
    )
    config = '[contracts]\nproducers = ["order.schema.json"]\n'
    source = make_repository(
        tmp_path / "orders", {".codehealth.toml": config, "order.schema.json": schema}
    )
    repository = Repository.objects.create(name="orders", path=str(source))
    _scan(repository)
    changed = schema.replace('"number"}', '"string"}').replace('["id"]', '["id", "total"]')
    commit(source, {"order.schema.json": changed})

    _scan(repository)

    found = {(f.rule, f.line) for f in _open(repository).values()}
    assert found == {("changed-type", 6), ("new-required", 6)}
