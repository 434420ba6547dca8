"""What the dependency audit reads from manifests and lock files, and how it ranks
an advisory: the parts that need no registry."""

from __future__ import annotations

import json
from pathlib import Path

from healthmon.code_checks.dependencies import fixed_version, severity_of
from healthmon.code_checks.dependencies.manifests import NPM, PYPI, Package, inventory
from healthmon.code_checks.dependencies.registries import advisory_details
from healthmon.models import Finding


def read(tmp_path: Path, files: dict[str, str]) -> tuple[set[tuple[str, str, str, str]], set[str]]:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = inventory(tmp_path, dict.fromkeys(files, "blob"))
    direct = {(p.ecosystem, p.name, p.version or "", p.declared) for p in found.direct}
    locked = {f"{p.ecosystem}:{p.name}@{p.version}" for p in found.locked}
    return direct, locked


def test_poetry_projects_are_read_with_their_lock(tmp_path: Path) -> None:
    pyproject = (
        '[tool.poetry.dependencies]\npython = "^3.12"\nRequests = "^2.31"\n'
        'local = { path = "../local" }\n[tool.poetry.group.dev.dependencies]\npytest = "8.3.1"\n'
    )
    lock = (
        '[[package]]\nname = "requests"\nversion = "2.32.3"\n\n'
        '[[package]]\nname = "pytest"\nversion = "8.3.1"\n\n'
        '[[package]]\nname = "local"\nversion = "0.1"\n[package.source]\ntype = "directory"\n'
    )
    direct, locked = read(tmp_path, {"pyproject.toml": pyproject, "poetry.lock": lock})

    assert direct == {(PYPI, "requests", "2.32.3", ">=2.31"), (PYPI, "pytest", "8.3.1", "==8.3.1")}
    assert locked == {"PyPI:requests@2.32.3", "PyPI:pytest@8.3.1"}


def test_requirements_pins_are_locked_and_ranges_are_not(tmp_path: Path) -> None:
    text = "-r base.txt\n# tools\nDjango==5.2.1 ; python_version >= '3.12'\ncelery>=5\n"
    text += "git+https://example.com/x.git#egg=x\n"
    direct, locked = read(tmp_path, {"requirements-dev.txt": text})

    assert direct == {(PYPI, "django", "5.2.1", "==5.2.1"), (PYPI, "celery", "", ">=5")}
    assert locked == {"PyPI:django@5.2.1"}


def test_npm_lockfile_version_1_with_nested_and_scoped_packages(tmp_path: Path) -> None:
    manifest = {
        "dependencies": {"@scope/widget": "^2.0.0", "local": "file:../local"},
        "devDependencies": {"typescript": "5.6.3"},
    }
    lock = {
        "lockfileVersion": 1,
        "dependencies": {
            "@scope/widget": {
                "version": "2.1.0",
                "dependencies": {"tiny": {"version": "0.0.1"}},
            },
            "typescript": {"version": "5.6.3"},
            "git-thing": {"version": "github:owner/thing#abc"},
        },
    }
    files = {"web/package.json": json.dumps(manifest), "web/package-lock.json": json.dumps(lock)}
    direct, locked = read(tmp_path, files)

    assert direct == {
        (NPM, "@scope/widget", "2.1.0", "^2.0.0"),
        (NPM, "typescript", "5.6.3", "5.6.3"),
    }
    assert locked == {"npm:@scope/widget@2.1.0", "npm:tiny@0.0.1", "npm:typescript@5.6.3"}


def test_an_unreadable_manifest_is_named_and_the_others_are_read(tmp_path: Path) -> None:
    files = {"package.json": "{not json", "requirements.txt": "httpx==0.28.1\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    found = inventory(tmp_path, dict.fromkeys(files, "blob"))

    assert [p.name for p in found.locked] == ["httpx"]
    assert len(found.unreadable) == 1
    assert found.unreadable[0].startswith("package.json: Expecting property name")


def test_an_advisory_is_ranked_by_cvss_then_by_the_database_s_level() -> None:
    def ranked(vuln: dict[str, object]) -> int:
        return severity_of(advisory_details({"id": "X", **vuln}))

    v4 = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"
    assert ranked({"severity": [{"type": "CVSS_V4", "score": v4}]}) == Finding.Severity.CRITICAL
    v2 = "AV:N/AC:L/Au:N/C:P/I:P/A:P"  # 7.5
    assert ranked({"severity": [{"type": "CVSS_V2", "score": v2}]}) == Finding.Severity.HIGH
    assert ranked({"severity": [{"score": "5.3"}]}) == Finding.Severity.MEDIUM
    moderate = {"database_specific": {"severity": "MODERATE"}}
    assert ranked({"severity": [{"score": "not a vector"}], **moderate}) == Finding.Severity.MEDIUM
    assert ranked({"affected": [{"ecosystem_specific": {"severity": "LOW"}}]}) == (
        Finding.Severity.LOW
    )
    assert ranked({}) == Finding.Severity.MEDIUM


def fixed_range(introduced: str, fixed: str) -> dict[str, object]:
    return {"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}


def test_the_fixed_version_is_the_lowest_fix_above_the_locked_version() -> None:
    advisory = advisory_details(
        {
            "id": "GHSA-x",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "Django"},
                    "ranges": [
                        fixed_range("0", "4.2.20"),
                        {
                            "type": "ECOSYSTEM",
                            "events": [{"introduced": "5.0"}, {"fixed": "5.1.8"}],
                        },
                        {
                            "type": "ECOSYSTEM",
                            "events": [{"introduced": "5.2"}, {"fixed": "5.2.1"}],
                        },
                    ],
                }
            ],
        }
    )
    package = Package(PYPI, "django", "5.1.2", "", "uv.lock", 3)

    assert fixed_version(package, advisory) == "5.1.8"
    assert fixed_version(Package(PYPI, "django", "5.2.1", "", "uv.lock", 3), advisory) is None
