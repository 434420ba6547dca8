"""Producer/consumer mismatches: what a consumer's type expects against the producer
schema its mapping names.

For each field the consumer declares (it reads it):
- `consumer-reads-missing` (high): the producer does not emit it (never did, or no
  longer does), unless the producer's object there lists no properties (anything goes);
- `consumer-type-mismatch` (high): no type in common (a number accepts an integer);
- `consumer-requires-optional` (medium): the consumer requires it, the producer marks
  it optional;
- `consumer-not-nullable` (medium): the producer may send null, the consumer's type
  does not allow it.
A mapping that names a schema the producer does not have is `consumer-unknown-schema`
(high) and a consumer type the file does not declare `consumer-unknown-type` (high).
"""

from __future__ import annotations

from healthmon.code_checks import Reported, identity_of
from healthmon.code_checks.contracts.documents import Field
from healthmon.models import Finding

HIGH, MEDIUM = int(Finding.Severity.HIGH), int(Finding.Severity.MEDIUM)


def mismatches(
    check: str,
    file: str,
    consumer: str,
    expects: tuple[Field, dict[str, Field]],
    producer: str,
    gives: tuple[Field, dict[str, Field]],
) -> list[Reported]:
    """`consumer` (a type in `file`) against `producer` (a schema, as the mapping says)."""
    found: list[Reported] = []

    def report(rule: str, severity: int, path: str, message: str, line: int | None) -> None:
        identity = identity_of(check, rule, file, [f"{consumer}.{path} {producer}"], 1, 1)
        found.append(Reported(check, rule, severity, message, file, line, identity))

    root, wanted = expects
    _, given = gives
    shown = {"": gives[0], **given}
    missing: list[str] = []
    for path, field in wanted.items():
        name = f"{consumer}.{path}"
        offer = shown.get(path)
        if offer is None:
            if _inside_open(path, shown) or any(path.startswith(m) for m in missing):
                continue  # anything goes there, or its parent is reported missing
            missing += [f"{path}.", f"{path}[]"]
            report(
                "consumer-reads-missing",
                HIGH,
                path,
                f"{name} is read by the consumer, but {producer} does not emit `{path}`.",
                field.line,
            )
            continue
        if not compatible(field.type, offer.type):
            report(
                "consumer-type-mismatch",
                HIGH,
                path,
                f"{name} is {field.type} for the consumer, {offer.type} in {producer}.",
                field.line,
            )
        if field.required and not offer.required:
            report(
                "consumer-requires-optional",
                MEDIUM,
                path,
                f"{name} is required by the consumer, optional in {producer}.",
                field.line,
            )
        if offer.nullable and not field.nullable:
            report(
                "consumer-not-nullable",
                MEDIUM,
                path,
                f"{name} may be null in {producer}; the consumer's type does not allow null.",
                field.line,
            )
    if not compatible(root.type, gives[0].type):
        report(
            "consumer-type-mismatch",
            HIGH,
            "",
            f"{consumer} is {root.type} for the consumer, {gives[0].type} in {producer}.",
            root.line,
        )
    return found


def compatible(expected: str, given: str) -> bool:
    wants, has = set(expected.split("|")), set(given.split("|"))
    if "any" in wants or "any" in has:
        return True
    return bool(wants & has) or ("number" in wants and "integer" in has)


def _inside_open(path: str, given: dict[str, Field]) -> bool:
    """True when an ancestor of `path` is an object the producer does not describe."""
    parts = path.replace("[]", ".[]").split(".")
    for end in range(len(parts) - 1, -1, -1):
        ancestor = ".".join(parts[:end]).replace(".[]", "[]")
        if ancestor in given:
            return given[ancestor].open or given[ancestor].type == "any"
    return False


def unknown(
    check: str, file: str, rule: str, subject: str, message: str, line: int | None
) -> Reported:
    identity = identity_of(check, rule, file, [subject], 1, 1)
    return Reported(check, rule, HIGH, message, file, line, identity)
