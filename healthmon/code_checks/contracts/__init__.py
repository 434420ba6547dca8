"""Contract validation: breaking changes in a repository's API contracts since the
last scan, producer/consumer mismatches, and (for this product) the run event
contract against the code that renders events.

The repository names its contracts (see `config`). Each producer (an OpenAPI 3
document or a JSON Schema, YAML or JSON) is read into a shape kept in the check's
state; the next scan compares with it (`breaking`). The first scan has nothing to
compare with: it records the shapes and reports no breaking change. Each consumer
(TypeScript types or a JSON Schema) is compared with the producer schemas its
mapping names (`consumers`). A file that cannot be read is a finding (`unreadable`,
high) and never fails the scan: its last good shape is kept for the next comparison.

Incremental: when neither the configuration nor any file it names changed since the
last scan, that scan's results are reused without parsing anything.
"""

from __future__ import annotations

from typing import Any

from healthmon.code_checks import Reported, ScanContext, as_json, distinct, from_json, identity_of
from healthmon.code_checks.contracts import breaking, consumers, events
from healthmon.code_checks.contracts.config import (
    FILES,
    ConfigurationInvalid,
    Consumer,
    Contracts,
    read_configuration,
)
from healthmon.code_checks.contracts.documents import ContractUnreadable, Document, Shape, read
from healthmon.code_checks.contracts.shapes import shape_of, target_fields
from healthmon.code_checks.contracts.typescript import TypeScriptTypes
from healthmon.models import Finding

NAME = "contracts"
TYPESCRIPT_SUFFIXES = (".ts", ".tsx", ".mts", ".cts")


def run(context: ScanContext) -> list[Reported]:
    try:
        contracts = read_configuration(context.path, context.repository.settings)
    except ConfigurationInvalid as error:
        context.state.update(context.previous_state)  # keep the shapes for later
        return [
            _unreadable(error.file or "(repository settings)", f"contract configuration: {error}")
        ]
    fingerprint = contracts.fingerprint()
    reused = _previous_results(context, contracts, fingerprint)
    if reused is not None:
        context.state.update({**context.previous_state, "commit": context.commit})
        context.progress(1, 1)
        return reused
    found = check(context, contracts)
    context.state.update({"commit": context.commit, "configuration": fingerprint})
    context.store(f"results-{context.commit}", as_json(found))
    return found


def _previous_results(
    context: ScanContext, contracts: Contracts, fingerprint: str
) -> list[Reported] | None:
    previous = context.previous_state
    if previous.get("configuration") != fingerprint or not context.unchanged(
        *FILES, *contracts.files()
    ):
        return None
    stored = context.cached(f"results-{previous.get('commit')}")
    if not isinstance(stored, list):
        return None
    try:
        results = from_json(stored)
    except TypeError:
        return None
    intended = _intended(context)
    return [item for item in results if item.identity not in intended]


def check(context: ScanContext, contracts: Contracts) -> list[Reported]:
    """Read every file the configuration names and report what they break."""
    total = len(contracts.producers) + len(contracts.consumers) + (1 if contracts.events else 0)
    done = 0
    found: list[Reported] = []
    before: dict[str, Any] = context.previous_state.get("shapes") or {}
    waiting = context.previous_state.get("pending") or []
    intended = _intended(context)
    shapes: dict[str, Any] = {}
    pending: list[dict[str, Any]] = []
    documents: dict[str, Document] = {}
    for producer in contracts.producers:
        context.remaining()
        mine = [p for p in waiting if p.get("file") == producer and p["identity"] not in intended]
        try:
            document = read(context.path, producer)
            shape = shape_of(document)
        except ContractUnreadable as error:
            found.append(_unreadable(producer, str(error)))
            if producer in before:
                shapes[producer] = before[producer]
            pending += mine
            found += [breaking.as_reported(p, Shape(), {}, NAME) for p in mine]
        else:
            documents[producer] = document
            shapes[producer] = shape.facts
            kept = [p for p in mine if not breaking.restored(p, shape)]
            if producer in before:
                busy = {p["key"] for p in kept}
                for change in breaking.changes(before[producer], shape):
                    item = change.pending(producer, NAME)
                    if change.key not in busy and item["identity"] not in intended:
                        kept.append(item)
            pending += kept
            found += [breaking.as_reported(p, shape, before.get(producer, {}), NAME) for p in kept]
        done += 1
        context.progress(done, total)
    context.state.update({"shapes": shapes, "pending": pending})
    for consumer in contracts.consumers:
        context.remaining()
        if consumer.producer in documents:
            found += _consumer(context, consumer, documents[consumer.producer])
        done += 1
        context.progress(done, total)
    if contracts.events:
        found += _events(context, *contracts.events)
        context.progress(total, total)
    return distinct(found)


def _consumer(context: ScanContext, consumer: Consumer, producer: Document) -> list[Reported]:
    file = consumer.file
    try:
        if file.endswith(TYPESCRIPT_SUFFIXES):
            types = TypeScriptTypes(context.path, file)
            expectations = {name: types.fields(name) for name in consumer.types}
        else:
            schema = read(context.path, file)
            expectations = {name: target_fields(schema, name) for name in consumer.types}
    except ContractUnreadable as error:
        return [_unreadable(file, str(error))]
    found: list[Reported] = []
    for name, target in consumer.types.items():
        expects = expectations[name]
        gives = target_fields(producer, target)
        if expects is None:
            found.append(
                consumers.unknown(
                    NAME,
                    file,
                    "consumer-unknown-type",
                    name,
                    f"{name} is named in the contracts configuration; {file} does not declare it.",
                    None,
                )
            )
        elif gives is None:
            found.append(
                consumers.unknown(
                    NAME,
                    file,
                    "consumer-unknown-schema",
                    f"{name} {target}",
                    f"{name} reads {target}, which {consumer.producer} does not have.",
                    expects[0].line,
                )
            )
        else:
            found += consumers.mismatches(
                NAME, file, name, expects, f"{consumer.producer} {target}", gives
            )
    return found


def _events(context: ScanContext, contract_file: str, renderer_file: str) -> list[Reported]:
    try:
        contract = events.read_contract(context.path, contract_file)
    except ContractUnreadable as error:
        return [_unreadable(contract_file, str(error))]
    try:
        renderers = events.read_renderers(context.path, renderer_file)
    except ContractUnreadable as error:
        return [_unreadable(renderer_file, str(error))]
    return events.compare(NAME, contract_file, contract, renderer_file, renderers, context.files)


def _unreadable(file: str, reason: str) -> Reported:
    return Reported(
        check=NAME,
        rule="unreadable",
        severity=int(Finding.Severity.HIGH),
        message=f"{file} cannot be read: {reason}",
        file=file,
        line=None,
        identity=identity_of(NAME, "unreadable", file, [""], 1, 1),
    )


def _intended(context: ScanContext) -> set[str]:
    """Identities a person marked intended or ignored: a breaking change they accepted."""
    return set(
        context.repository.findings.filter(
            check_name=NAME, status__in=[Finding.Status.INTENDED, Finding.Status.IGNORED]
        ).values_list("identity", flat=True)
    )
