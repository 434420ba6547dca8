"""What the package registries say: the latest version on PyPI and npm, and OSV's
known vulnerabilities of exact versions, each answer kept in the check's cache for
HEALTHMON_CODE_REGISTRY_CACHE_SECONDS so that the next scan asks again only about
packages it has not seen lately.

Requests run a few at a time (HEALTHMON_CODE_REGISTRY_CONCURRENCY), each within
HEALTHMON_CODE_REGISTRY_TIMEOUT_SECONDS and the scan's time limit. A registry that
cannot be reached (a connection error, a timeout, an error status other than 404,
an answer that is not what it should be) is marked unreachable with the reason, and
not asked again in this scan: what it would have told is counted as "not checked",
so that the check can say so instead of reporting nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError
from django.conf import settings

from healthmon.code_checks import ScanContext
from healthmon.code_checks.dependencies.manifests import PYPI, Package

CACHE_KEY = "registry-answers"
# OSV takes at most 1000 queries in one querybatch.
OSV_BATCH = 1000


@dataclass
class Registry:
    name: str  # as a person says it: "PyPI", "npm", "OSV"
    url: str
    unreachable: str = ""  # why it could not be reached, once it could not
    not_checked: set[str] = field(default_factory=set)  # packages it was not asked about
    unread: set[str] = field(default_factory=set)  # OSV: advisories whose details it kept


@dataclass(frozen=True)
class Advisory:
    id: str
    summary: str
    severity: str  # "critical", "high", "medium", "low" or "" (not given)
    score: float | None  # CVSS base score, when a vector or score is given
    fixed: dict[str, list[str]]  # "ecosystem:name" -> the versions that fix it


class _Unreachable(Exception):
    pass


class Registries:
    """The three registries of one scan, with the cache of their recent answers."""

    def __init__(self, context: ScanContext, now: Callable[[], float] = time.time) -> None:
        self.context = context
        self.now = now
        self.pypi = Registry("PyPI", settings.HEALTHMON_CODE_PYPI_URL.rstrip("/"))
        self.npm = Registry("npm", settings.HEALTHMON_CODE_NPM_URL.rstrip("/"))
        self.osv = Registry("OSV", settings.HEALTHMON_CODE_OSV_URL.rstrip("/"))
        self.max_age = settings.HEALTHMON_CODE_REGISTRY_CACHE_SECONDS
        stored = context.cached(CACHE_KEY)
        self.answers: dict[str, list[Any]] = stored if isinstance(stored, dict) else {}
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def __enter__(self) -> Registries:
        return self

    @property
    def client(self) -> httpx.Client:
        """Made on the first request: its TLS context takes a noticeable part of a
        second, which a scan that finds every answer in the cache does not spend."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    follow_redirects=True,
                    headers={"Accept": "application/json", "User-Agent": "controlplane-healthmon"},
                )
            return self._client

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        oldest = self.now() - self.max_age
        fresh = {key: answer for key, answer in self.answers.items() if answer[0] >= oldest}
        self.context.store(CACHE_KEY, fresh)

    @property
    def all(self) -> tuple[Registry, Registry, Registry]:
        return (self.pypi, self.npm, self.osv)

    # -- what the check asks --------------------------------------------------------------

    def latest_versions(self, packages: Iterable[Package]) -> dict[tuple[str, str], str]:
        """(ecosystem, name) -> the registry's latest version, for those it knows."""
        wanted = {(package.ecosystem, package.name) for package in packages}
        found: dict[tuple[str, str], str] = {}

        def lookup(item: tuple[str, str]) -> None:
            ecosystem, name = item
            registry = self.pypi if ecosystem == PYPI else self.npm
            key = f"latest:{ecosystem}:{name}"
            latest = self._remembered(key, registry, name, self._latest_of, registry.not_checked)
            if isinstance(latest, str):
                found[item] = latest

        self._each(sorted(wanted), lookup)
        return found

    def vulnerabilities(self, packages: Iterable[Package]) -> dict[tuple[str, str, str], list[str]]:
        """(ecosystem, name, version) -> the ids of OSV's advisories affecting it."""
        keys = sorted({package.key for package in packages if package.version})
        found: dict[tuple[str, str, str], list[str]] = {}
        asking = []
        for key in keys:
            remembered = self._fresh(f"osv:{':'.join(key)}")
            if remembered is None:
                asking.append(key)
            else:
                found[key] = list(remembered)
        for start in range(0, len(asking), OSV_BATCH):
            batch = asking[start : start + OSV_BATCH]
            try:
                answered = self._query_batch(batch)
            except _Unreachable:
                self.osv.not_checked.update(f"{name} {version}" for _, name, version in batch)
                continue
            for key, ids in zip(batch, answered, strict=True):
                found[key] = ids
                self.answers[f"osv:{':'.join(key)}"] = [self.now(), ids]
        return found

    def advisories(self, ids: Iterable[str]) -> dict[str, Advisory]:
        found: dict[str, Advisory] = {}

        def lookup(advisory_id: str) -> None:
            details = self._remembered(
                f"vuln:{advisory_id}", self.osv, advisory_id, self._vuln, self.osv.unread
            )
            if isinstance(details, dict):
                found[advisory_id] = Advisory(**details)

        self._each(sorted(set(ids)), lookup)
        return found

    # -- the requests ---------------------------------------------------------------------

    def _remembered(
        self,
        key: str,
        registry: Registry,
        what: str,
        ask: Callable[[Registry, str], Any],
        missed: set[str],
    ) -> Any:
        """The fresh answer in the cache, else the registry's (kept); None when it does
        not know `what`, or could not be reached (then `what` goes to `missed`)."""
        remembered = self._fresh(key)
        if remembered is not None:
            return remembered[0]
        if registry.unreachable:
            missed.add(what)
            return None
        try:
            answer = ask(registry, what)
        except _Unreachable:
            missed.add(what)
            return None
        self.answers[key] = [self.now(), [answer]]
        return answer

    def _fresh(self, key: str) -> Any:
        answer = self.answers.get(key)
        if isinstance(answer, list) and len(answer) == 2 and answer[0] >= self.now() - self.max_age:
            return answer[1]
        return None

    def _each(self, items: list[Any], work: Callable[[Any], None]) -> None:
        if not items:
            return
        workers = max(1, min(settings.HEALTHMON_CODE_REGISTRY_CONCURRENCY, len(items)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, items))

    def _request(self, registry: Registry, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer; None for a 404; `_Unreachable` (and the registry marked so)
        for anything else that is not an answer."""
        if registry.unreachable:
            raise _Unreachable
        timeout = min(settings.HEALTHMON_CODE_REGISTRY_TIMEOUT_SECONDS, self.context.remaining())
        try:
            response = self.client.request(method, registry.url + path, json=body, timeout=timeout)
        except httpx.TimeoutException:
            self._unreachable(registry, f"no answer within {timeout:g} s")
        except httpx.HTTPError as error:
            self._unreachable(registry, f"{type(error).__name__}: {error}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            self._unreachable(registry, f"it answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            self._unreachable(registry, "its answer was not JSON")

    def _unreachable(self, registry: Registry, reason: str) -> NoReturn:
        registry.unreachable = registry.unreachable or reason
        raise _Unreachable(reason)

    def _latest_of(self, registry: Registry, name: str) -> str | None:
        if registry is self.pypi:
            answer = self._request(registry, "GET", f"/pypi/{quote(name)}/json")
            latest = (answer or {}).get("info", {}).get("version") if answer else None
        else:
            # A scoped name keeps its @ and has its slash escaped, as npm wants it.
            answer = self._request(registry, "GET", "/" + quote(name, safe="@"))
            latest = (answer or {}).get("dist-tags", {}).get("latest") if answer else None
        if answer is not None and not isinstance(latest, str):
            self._unreachable(registry, f"its answer about {name} had no latest version")
        return latest

    def _query_batch(self, batch: list[tuple[str, str, str]]) -> list[list[str]]:
        queries = [
            {"package": {"ecosystem": ecosystem, "name": name}, "version": version}
            for ecosystem, name, version in batch
        ]
        answer = self._request(self.osv, "POST", "/v1/querybatch", {"queries": queries})
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(batch):
            self._unreachable(self.osv, "its querybatch answer did not have one result a query")
        return [
            [str(vuln["id"]) for vuln in (result or {}).get("vulns", []) if "id" in vuln]
            for result in results
        ]

    def _vuln(self, registry: Registry, advisory_id: str) -> dict[str, Any] | None:
        answer = self._request(registry, "GET", f"/v1/vulns/{quote(advisory_id)}")
        if answer is None:
            return None
        if not isinstance(answer, dict) or "id" not in answer:
            self._unreachable(registry, f"its answer about {advisory_id} was not an advisory")
        return advisory_details(answer).__dict__


def advisory_details(vuln: dict[str, Any]) -> Advisory:
    fixed: dict[str, list[str]] = {}
    for affected in vuln.get("affected") or []:
        package = affected.get("package") or {}
        key = f"{package.get('ecosystem')}:{package.get('name')}"
        for version_range in affected.get("ranges") or []:
            for event in version_range.get("events") or []:
                if "fixed" in event:
                    fixed.setdefault(key, []).append(str(event["fixed"]))
    return Advisory(
        id=str(vuln["id"]),
        summary=str(vuln.get("summary") or vuln.get("details") or "")[:300],
        severity=database_severity(vuln),
        score=cvss_score(vuln),
        fixed=fixed,
    )


_LEVELS = {
    "critical": "critical",
    "high": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
}


def database_severity(vuln: dict[str, Any]) -> str:
    """The advisory database's own level (GitHub's CRITICAL, HIGH, MODERATE, LOW),
    on the advisory or on one of its affected packages; "" when none is given."""
    places = [vuln, *(vuln.get("affected") or [])]
    for place in places:
        for table in ("database_specific", "ecosystem_specific"):
            level = (place.get(table) or {}).get("severity")
            if isinstance(level, str) and level.lower() in _LEVELS:
                return _LEVELS[level.lower()]
    return ""


def cvss_score(vuln: dict[str, Any]) -> float | None:
    """The highest CVSS base score of the advisory's `severity` entries (a vector, or
    a number as some databases give), None when there is none that reads."""
    scores = []
    for entry in vuln.get("severity") or []:
        score = str(entry.get("score", "")).strip()
        try:
            scores.append(float(score))
            continue
        except ValueError:
            pass
        kind = (
            CVSS4 if score.startswith("CVSS:4") else CVSS3 if score.startswith("CVSS:3") else CVSS2
        )
        try:
            scores.append(float(kind(score).base_score))
        except CVSSError:
            continue
    return max(scores) if scores else None
