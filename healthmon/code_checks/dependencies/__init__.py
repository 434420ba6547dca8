"""The dependency audit: what a repository depends on, and what is wrong with it.

- deptry: Python dependencies that are unused (declared, never imported), missing
  (imported, not declared), transitive-only (imported, declared only by another
  package) or misplaced (imported by the code, declared for development only);
- outdated: a direct dependency whose locked or pinned version is behind the latest on
  PyPI or npm, or whose declared range leaves the latest out;
- vulnerable: a locked version (transitive ones included) that OSV knows an advisory
  for, with the advisory's severity and the version that fixes it;
- registry-unreachable: a registry that could not be reached, and what was therefore
  not checked; a scan never passes silence off as "no vulnerabilities".

Identities hold the package (or module) and the rule, never a line: a finding stays the
same while its version or the manifest's layout changes.
"""

from __future__ import annotations

import re

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from healthmon.code_checks import Reported, ScanContext, distinct, identity_of
from healthmon.code_checks.dependencies import deptry_check, manifests
from healthmon.code_checks.dependencies.manifests import NPM, PYPI, Inventory, Package
from healthmon.code_checks.dependencies.registries import Advisory, Registries, Registry
from healthmon.models import Finding

NAME = "dependencies"
Severity = Finding.Severity

DEPTRY_SEVERITY = {
    "DEP001": Severity.HIGH,  # missing: the import fails where the package is not there
    "DEP003": Severity.MEDIUM,  # transitive: breaks when the other package drops it
    "DEP004": Severity.MEDIUM,  # a development dependency imported by the code
    "DEP002": Severity.LOW,  # unused
    "DEP005": Severity.LOW,  # a standard library module declared as a dependency
}
LEVELS = {
    "critical": Severity.CRITICAL,
    "high": Severity.HIGH,
    "medium": Severity.MEDIUM,
    "low": Severity.LOW,
}


def run(context: ScanContext) -> list[Reported]:
    found = manifests.cached_inventory(context)
    total = 1 + len(found.direct) + len(found.locked)
    reported = [_unreadable(line) for line in found.unreadable]
    reported += _deptry(context)
    context.progress(1, total)
    with Registries(context) as registries:
        reported += _outdated(found, registries)
        context.progress(1 + len(found.direct), total)
        reported += _vulnerable(found, registries)
        reported += [_unreachable(r, found) for r in registries.all if r.unreachable]
    context.progress(total, total)
    return distinct(reported)


def _reported(
    rule: str, severity: int, message: str, file: str, line: int | None, *about: str
) -> Reported:
    identity = identity_of(NAME, rule, "", [" ".join(about)], 1, 1)
    return Reported(NAME, rule, severity, message, file, line, identity)


def _unreadable(line: str) -> Reported:
    file, _, reason = line.partition(": ")
    message = f"{file} could not be read, so its packages were not audited: {reason}"
    return _reported("manifest-unreadable", Severity.MEDIUM, message, file, None, file)


# -- deptry -------------------------------------------------------------------------------


def _deptry(context: ScanContext) -> list[Reported]:
    by_problem: dict[tuple[str, str], list[dict[str, object]]] = {}
    for issue in deptry_check.issues(context):
        by_problem.setdefault((str(issue["code"]), str(issue["module"])), []).append(issue)
    reported = []
    for (code, module), places in sorted(by_problem.items()):
        first = places[0]
        message = f"deptry {code}: {first['message']}"
        if code != "DEP002":
            where = [f"{place['file']}:{place['line']}" for place in places[:3]]
            more = f" and {len(places) - 3} more" if len(places) > 3 else ""
            message += f" (imported in {', '.join(where)}{more})"
        line = first["line"]
        reported.append(
            _reported(
                code,
                DEPTRY_SEVERITY.get(code, Severity.MEDIUM),
                message,
                str(first["file"]),
                line if isinstance(line, int) and line > 0 else None,
                module,
            )
        )
    return reported


# -- outdated -----------------------------------------------------------------------------


def _outdated(found: Inventory, registries: Registries) -> list[Reported]:
    latest = registries.latest_versions(found.direct)
    reported = []
    for package in found.direct:
        newest = latest.get((package.ecosystem, package.name))
        if newest is None:
            continue
        registry = "PyPI" if package.ecosystem == PYPI else "npm"
        if package.version:
            if not is_newer(package.ecosystem, newest, package.version):
                continue
            behind = f"{package.name} {package.version} is outdated: {newest} is the latest on"
            message = f"{behind} {registry}"
        elif not admits(package.ecosystem, package.declared, newest):
            message = (
                f"{package.name}: the declared range {package.declared!r} leaves out "
                f"{newest}, the latest on {registry}"
            )
        else:
            continue
        severity = Severity.MEDIUM if _major_behind(package, newest) else Severity.LOW
        reported.append(
            _reported(
                "outdated",
                severity,
                message,
                package.file,
                package.line,
                package.ecosystem,
                package.name,
                package.file,
            )
        )
    return reported


def is_newer(ecosystem: str, candidate: str, than: str) -> bool:
    if ecosystem == PYPI:
        try:
            return Version(candidate) > Version(than)
        except InvalidVersion:
            return candidate != than
    return semver(candidate) > semver(than)


_SEMVER = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(-[0-9A-Za-z.-]+)?")


def semver(version: str) -> tuple[int, int, int, int]:
    """npm's order, enough to compare releases: a pre-release before its release."""
    match = _SEMVER.match(version.strip())
    if not match:
        return (0, 0, 0, 0)
    major, minor, patch, pre = match.groups()
    return (int(major), int(minor or 0), int(patch or 0), 0 if pre else 1)


def admits(ecosystem: str, declared: str, version: str) -> bool:
    """Whether a declared range lets the latest version in (an unreadable range is
    given the benefit of the doubt)."""
    declared = declared.strip()
    if ecosystem == PYPI:
        try:
            return not declared or SpecifierSet(declared).contains(version, prereleases=True)
        except (InvalidSpecifier, InvalidVersion):
            return True
    if not declared or declared in ("*", "latest", "x") or declared.startswith((">", "|")):
        return True
    if "||" in declared or " " in declared:
        return True  # a compound range: not worth a wrong finding
    base, wanted = semver(declared.lstrip("^~=v")), semver(version)
    if declared.startswith("^"):
        # ^ lets in the same major (the same minor below 1.0).
        return wanted[:1] == base[:1] if base[0] else wanted[:2] == base[:2]
    if declared.startswith("~"):
        return wanted[:2] == base[:2]
    return wanted[:3] == base[:3]


def _major_behind(package: Package, newest: str) -> bool:
    """The latest is of a major version the locked one, or the declared range, is not."""
    if package.ecosystem == PYPI:
        try:
            major = Version(newest).major
            if package.version:
                return major > Version(package.version).major
            return not SpecifierSet(package.declared).contains(f"{major}.0", prereleases=True)
        except (InvalidVersion, InvalidSpecifier):
            return False
    current = package.version or package.declared.lstrip("^~=<>! v")
    return semver(newest)[0] > semver(current)[0]


# -- vulnerabilities ----------------------------------------------------------------------


def _vulnerable(found: Inventory, registries: Registries) -> list[Reported]:
    hits = registries.vulnerabilities(found.locked)
    advisories = registries.advisories(ident for ids in hits.values() for ident in ids)
    reported = []
    for package in found.locked:
        for advisory_id in hits.get(package.key, []):
            advisory = advisories.get(advisory_id)
            reported.append(_vulnerability(package, advisory_id, advisory))
    return reported


def _vulnerability(package: Package, advisory_id: str, advisory: Advisory | None) -> Reported:
    about = f"{package.name} {package.version} has a known vulnerability, {advisory_id}"
    if advisory is None:
        message = f"{about} (its details could not be read from OSV)"
        severity = int(Severity.HIGH)
    else:
        fixed = fixed_version(package, advisory)
        summary = f": {advisory.summary}" if advisory.summary else ""
        fix = f"fixed in {fixed}" if fixed else "no fixed version yet"
        message = f"{about}{summary} ({fix})"
        severity = severity_of(advisory)
    return _reported(
        "vulnerable",
        severity,
        message,
        package.file,
        package.line,
        package.ecosystem,
        package.name,
        advisory_id,
    )


def severity_of(advisory: Advisory) -> int:
    """The CVSS base score when there is one, else the database's level, else medium."""
    if advisory.score is not None:
        if advisory.score >= 9.0:
            return Severity.CRITICAL
        if advisory.score >= 7.0:
            return Severity.HIGH
        if advisory.score >= 4.0:
            return Severity.MEDIUM
        return Severity.LOW
    return LEVELS.get(advisory.severity, Severity.MEDIUM)


def fixed_version(package: Package, advisory: Advisory) -> str | None:
    """The lowest version that fixes it above the one locked."""
    same = canonicalize_name if package.ecosystem == PYPI else str
    versions = [
        version
        for key, fixes in advisory.fixed.items()
        for version in fixes
        if key.partition(":")[0] == package.ecosystem
        and same(key.partition(":")[2]) == package.name
        and is_newer(package.ecosystem, version, package.version or "0")
    ]
    if not versions:
        return None
    lowest = versions[0]
    for version in versions[1:]:
        if is_newer(package.ecosystem, lowest, version):
            lowest = version
    return lowest


# -- unreachable registries ---------------------------------------------------------------


def _unreachable(registry: Registry, found: Inventory) -> Reported:
    count = len(registry.not_checked)
    if registry.name == "OSV":
        missed = f"{count} locked package{'s' if count != 1 else ''} were not checked for known"
        missed += " vulnerabilities"
        if registry.unread:
            missed += f" and {len(registry.unread)} advisories found could not be read"
        file = found.locked[0].file if found.locked else ""
    else:
        ecosystem = PYPI if registry.name == "PyPI" else NPM
        direct = [package for package in found.direct if package.ecosystem == ecosystem]
        missed = f"{count} package{'s' if count != 1 else ''} were not checked for newer versions"
        file = direct[0].file if direct else ""
    message = (
        f"{registry.name} ({registry.url}) could not be reached ({registry.unreachable}): "
        f"{missed}. This is not a clean result: scan again once it answers."
    )
    return _reported("registry-unreachable", Severity.MEDIUM, message, file, None, registry.name)
