"""The dependency audit check on small fixture repositories, with PyPI, npm and OSV
served by local fakes (benchmarks.registries)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.registries import NPM, PYPI, Advisory, FakeRegistries
from healthmon.code_checks.dependencies import deptry_check
from healthmon.code_scans import scan_repository
from healthmon.models import Finding, Repository, Scan
from tests.healthmon.code_repos import commit, make_repository, shop, uv_lock

CRITICAL_VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8


@pytest.fixture
def registries(settings: Any, tmp_path: Path) -> Iterator[FakeRegistries]:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "critical"
    settings.HEALTHMON_CODE_REGISTRY_TIMEOUT_SECONDS = 5
    with FakeRegistries() as fakes:
        for name, setting in fakes.settings().items():
            setattr(settings, name, setting)
        fakes.publish(PYPI, "attrs", "24.1.0")
        fakes.publish(PYPI, "httpx", "0.28.1")
        fakes.publish(PYPI, "Jinja2", "3.1.6")
        fakes.publish(NPM, "left-pad", "1.3.0")
        fakes.publish(NPM, "htmx.org", "2.0.4")
        fakes.advise(
            Advisory(
                "GHSA-j2j2-sand-box1",
                PYPI,
                "Jinja2",
                fixed="3.1.5",
                introduced="3.0.0",
                summary="Jinja2 sandbox breakout through indirect reference to format method",
                cvss=CRITICAL_VECTOR,
            )
        )
        fakes.advise(
            Advisory(
                "GHSA-left-pad-0001",
                NPM,
                "left-pad",
                fixed="1.2.0",
                summary="left-pad pads with the wrong character",
                severity="MODERATE",
            )
        )
        yield fakes


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "shop", shop())


@pytest.fixture
def repository(db: Any, source: Path) -> Repository:
    return Repository.objects.create(name="shop", path=str(source))


def audit(repository: Repository) -> dict[tuple[str, str], Finding]:
    """Scan, and the open dependency findings by (rule, package or module)."""
    scan = scan_repository(repository)
    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    found = {}
    for finding in Finding.objects.filter(
        repository=repository, check_name="dependencies", status=Finding.Status.OPEN
    ):
        if finding.rule.startswith("DEP"):
            quoted = re.search(r"'([^']+)'", finding.message)
            about = quoted.group(1) if quoted else ""
        else:
            about = finding.message.split(" ", 1)[0].rstrip(":")
        found[(finding.rule, about)] = finding
    return found


def test_deptry_reports_unused_missing_and_transitive_dependencies(
    registries: FakeRegistries, db: Any, tmp_path: Path
) -> None:
    code = "import httpx\nimport httpcore\nimport nosuchmodule_xyz\n"
    pyproject = '[project]\nname = "tool"\nversion = "1"\ndependencies = ["httpx", "left-pad-py"]\n'
    source = make_repository(tmp_path / "tool", {"pyproject.toml": pyproject, "tool.py": code})
    repository = Repository.objects.create(name="tool", path=str(source))

    found = audit(repository)

    deptry = {key: finding for key, finding in found.items() if key[0].startswith("DEP")}
    assert set(deptry) == {
        ("DEP001", "nosuchmodule_xyz"),
        ("DEP002", "left-pad-py"),
        ("DEP003", "httpcore"),
    }
    missing = deptry[("DEP001", "nosuchmodule_xyz")]
    assert (missing.severity, missing.file, missing.line) == (Finding.Severity.HIGH, "tool.py", 3)
    assert "imported in tool.py:3" in missing.message
    unused = deptry[("DEP002", "left-pad-py")]
    assert (unused.severity, unused.file) == (Finding.Severity.LOW, "pyproject.toml")
    assert deptry[("DEP003", "httpcore")].severity == Finding.Severity.MEDIUM

    commit(source, {"pyproject.toml": pyproject.replace('"left-pad-py"', '"httpcore"')})
    after = audit(repository)
    assert {key for key in after if key[0].startswith("DEP")} == {("DEP001", "nosuchmodule_xyz")}
    assert after[("DEP001", "nosuchmodule_xyz")].pk == missing.pk


def test_a_configuration_deptry_refuses_fails_the_check_with_its_reason(
    registries: FakeRegistries, db: Any, tmp_path: Path
) -> None:
    pyproject = '[project]\nname = "tool"\nversion = "1"\n\n[tool.deptry]\nbogus = 1\n'
    source = make_repository(tmp_path / "tool", {"pyproject.toml": pyproject, "tool.py": ""})
    repository = Repository.objects.create(name="tool", path=str(source))

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error.startswith("dependencies: deptry failed: ")
    assert "contains invalid configuration options: ['bogus']" in scan.error
    assert "error" not in scan.summary["ruff"]


def test_outdated_packages_on_pypi_and_npm_and_none_for_those_up_to_date(
    registries: FakeRegistries, repository: Repository
) -> None:
    found = audit(repository)

    outdated = {key[1]: finding for key, finding in found.items() if key[0] == "outdated"}
    assert set(outdated) == {"httpx", "jinja2", "left-pad"}  # attrs, htmx.org are the latest
    httpx = outdated["httpx"]
    assert httpx.message == "httpx 0.27.0 is outdated: 0.28.1 is the latest on PyPI"
    assert (httpx.severity, httpx.file, httpx.line) == (Finding.Severity.LOW, "pyproject.toml", 4)
    left_pad = outdated["left-pad"]
    assert left_pad.message == "left-pad 1.1.3 is outdated: 1.3.0 is the latest on npm"
    assert left_pad.file == "package.json"
    assert "GET /pypi/attrs/json" in registries.pypi.requests
    assert "GET /htmx.org" in registries.npm.requests


def test_a_declared_range_that_leaves_the_latest_out_is_outdated(
    registries: FakeRegistries, db: Any, tmp_path: Path
) -> None:
    registries.publish(PYPI, "django", "6.0.1")
    registries.publish(PYPI, "celery", "5.6.0")
    requirements = "django>=4.2,<5  # LTS\ncelery>=5.5\n"
    source = make_repository(tmp_path / "site", {"requirements.txt": requirements})
    repository = Repository.objects.create(name="site", path=str(source))

    found = audit(repository)

    (django,) = [finding for key, finding in found.items() if key[0] == "outdated"]
    assert django.message == (
        "django: the declared range '<5,>=4.2' leaves out 6.0.1, the latest on PyPI"
    )
    assert (django.severity, django.file, django.line) == (
        Finding.Severity.MEDIUM,
        "requirements.txt",
        1,
    )


def test_a_vulnerable_version_with_its_severity_and_fixed_version_until_it_is_fixed(
    registries: FakeRegistries, repository: Repository, source: Path
) -> None:
    found = audit(repository)

    jinja = found[("vulnerable", "jinja2")]
    assert jinja.severity == Finding.Severity.CRITICAL
    assert jinja.message == (
        "jinja2 3.1.4 has a known vulnerability, GHSA-j2j2-sand-box1: Jinja2 sandbox breakout "
        "through indirect reference to format method (fixed in 3.1.5)"
    )
    assert (jinja.file, jinja.line) == ("uv.lock", 20)
    left_pad = found[("vulnerable", "left-pad")]
    assert left_pad.severity == Finding.Severity.MEDIUM
    assert left_pad.file == "package-lock.json"
    assert left_pad.message.endswith("left-pad pads with the wrong character (fixed in 1.2.0)")
    assert jinja.task is not None  # critical: a task to fix it
    assert ("registry-unreachable", "OSV") not in found

    commit(source, {"uv.lock": uv_lock(attrs="24.1.0", httpx="0.27.0", jinja2="3.1.5")})
    after = audit(repository)

    assert ("vulnerable", "jinja2") not in after
    jinja.refresh_from_db()
    assert jinja.status == Finding.Status.FIXED
    assert after[("vulnerable", "left-pad")].pk == left_pad.pk


def test_an_unreachable_osv_is_said_plainly_and_the_rest_is_kept(
    registries: FakeRegistries, repository: Repository
) -> None:
    registries.osv.stop()

    found = audit(repository)

    assert not [key for key in found if key[0] == "vulnerable"]
    unreachable = found[("registry-unreachable", "OSV")]
    assert unreachable.severity == Finding.Severity.MEDIUM
    assert unreachable.message.startswith(f"OSV ({registries.osv.url}) could not be reached (")
    assert "5 locked packages were not checked for known vulnerabilities" in unreachable.message
    assert "This is not a clean result" in unreachable.message
    assert ("outdated", "httpx") in found  # PyPI answered: its findings are there


@pytest.mark.parametrize(
    ("registry", "failure", "reason"),
    [
        ("pypi", 500, "it answered HTTP 500"),
        ("pypi", 429, "it answered HTTP 429"),
        ("npm", "garbage", "its answer was not JSON"),
    ],
)
def test_a_registry_that_fails_is_named_with_what_was_not_checked(
    registries: FakeRegistries,
    repository: Repository,
    registry: str,
    failure: int | str,
    reason: str,
    settings: Any,
) -> None:
    settings.HEALTHMON_CODE_REGISTRY_CONCURRENCY = 1
    server = getattr(registries, registry)
    server.fail(failure)

    found = audit(repository)

    unreachable = found[("registry-unreachable", server.name)]
    assert f"{server.name} ({server.url}) could not be reached ({reason}): " in (
        unreachable.message
    )
    assert "were not checked for newer versions" in unreachable.message
    assert ("vulnerable", "jinja2") in found  # OSV answered
    # The registry is not hammered once it has failed.
    assert len(server.requests) == 1


def test_a_registry_that_does_not_answer_in_time_is_named(
    registries: FakeRegistries, repository: Repository, settings: Any
) -> None:
    settings.HEALTHMON_CODE_REGISTRY_TIMEOUT_SECONDS = 0.2
    registries.npm.hold = threading.Event()
    try:
        found = audit(repository)
    finally:
        registries.npm.hold.set()

    unreachable = found[("registry-unreachable", "npm")]
    assert f"npm ({registries.npm.url}) could not be reached (no answer within 0.2 s): " in (
        unreachable.message
    )
    assert ("outdated", "httpx") in found
    assert ("vulnerable", "left-pad") in found  # OSV still knows the npm lock's versions


def test_an_advisory_osv_cannot_describe_is_still_reported(
    registries: FakeRegistries, repository: Repository
) -> None:
    original = registries.osv.route

    def without_details(method: str, path: str, body: Any) -> tuple[int, Any]:
        if path.startswith("/v1/vulns/"):
            return 503, {}
        return original(method, path, body)

    registries.osv.route = without_details

    found = audit(repository)

    left_pad = found[("vulnerable", "left-pad")]
    assert left_pad.severity == Finding.Severity.HIGH
    assert "GHSA-left-pad-0001 (its details could not be read from OSV)" in left_pad.message
    unreachable = found[("registry-unreachable", "OSV")]
    assert "2 advisories found could not be read" in unreachable.message


def test_findings_keep_their_identity_when_manifests_move_and_versions_change(
    registries: FakeRegistries, repository: Repository, source: Path
) -> None:
    before = audit(repository)
    shifted = "# The shop's dependencies.\n\n" + shop()["pyproject.toml"]
    lock = "# locked\n" + uv_lock(attrs="24.1.0", httpx="0.27.1", jinja2="3.1.4")
    commit(source, {"pyproject.toml": shifted, "uv.lock": lock})

    after = audit(repository)

    assert set(after) == set(before)
    for key, finding in after.items():
        assert finding.pk == before[key].pk, key
    assert after[("outdated", "httpx")].message.startswith("httpx 0.27.1 is outdated")
    assert after[("outdated", "httpx")].line == 6


def test_an_incremental_scan_asks_no_registry_and_skips_deptry_when_nothing_changed(
    registries: FakeRegistries,
    repository: Repository,
    source: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deptry_runs: list[Path] = []
    real_run = deptry_check.run_deptry

    def counted(checkout: Path, timeout: float) -> list[dict[str, Any]]:
        deptry_runs.append(checkout)
        return real_run(checkout, timeout)

    monkeypatch.setattr(deptry_check, "run_deptry", counted)
    first = audit(repository)
    asked = len(registries.requests)
    assert asked > 0
    assert len(deptry_runs) == 1

    # Code changes without a new import: the registries' answers are fresh and deptry's
    # answer still holds.
    commit(source, {"shop.py": "import attrs\nimport httpx\nimport jinja2\n\n\nLIMIT = 2\n"})
    again = audit(repository)

    assert len(registries.requests) == asked
    assert len(deptry_runs) == 1
    assert {key: finding.pk for key, finding in again.items()} == {
        key: finding.pk for key, finding in first.items()
    }

    # A new import: deptry runs again and sees it.
    commit(source, {"shop.py": "import attrs\nimport httpx\nimport jinja2\nimport missing_mod\n"})
    assert ("DEP001", "missing_mod") in audit(repository)
    assert len(deptry_runs) == 2
    assert len(registries.requests) == asked

    # Past the cache's age the registries are asked again.
    settings.HEALTHMON_CODE_REGISTRY_CACHE_SECONDS = 0
    commit(source, {"README.md": "The shop.\n"})
    audit(repository)
    assert len(registries.requests) == 2 * asked
