"""A smoke test of `manage.py bench_scan` on a tiny repository: both scans run with
every registered check, the report has its lines, and the source repository is only
read. (The numbers are not tested: benchmarks are run by hand.)"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from healthmon.code_scans import CHECKS
from tests.healthmon.code_repos import git, make_repository, uv_lock

PYPROJECT = '[project]\nname = "tiny"\nversion = "1"\ndependencies = ["httpx>=0.27", "attrs"]\n'


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    files = {
        "pyproject.toml": PYPROJECT,
        "uv.lock": uv_lock(attrs="24.1.0", httpx="0.27.0"),
        "app.py": "import attrs\nimport httpx\n\n\ndef main():\n    return 1\n",
    }
    return make_repository(tmp_path / "tiny", files)


def test_bench_scan_runs_a_full_and_an_incremental_scan_and_reports_both(tiny: Path) -> None:
    head = git(tiny, "rev-parse", "HEAD")
    out = StringIO()

    call_command("bench_scan", "--source", str(tiny), "--change", "app.py", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"bench_scan: {tiny} at {head[:7]}")
    assert lines[0].endswith("after a one-file change (app.py)")
    assert f"Checks: {', '.join(check.NAME for check in CHECKS)}" in lines
    assert "(2 PyPI and 0 npm packages, 2 advisories)" in out.getvalue()
    (full,) = [line for line in lines if line.startswith("Full scan: ")]
    (incremental,) = [line for line in lines if line.startswith("Incremental scan: ")]
    assert re.match(r"Full scan: succeeded in [\d.]+ s; peak RSS \d+ MB \(scan process\)", full)
    assert incremental.startswith("Incremental scan: succeeded in ")
    # The fakes made the first direct packages outdated and gave the first two locked
    # ones an advisory: the audit found them, and asked nothing more the second time.
    assert "dependencies 4" in full
    assert "0 registry requests" not in full
    assert "; 0 registry requests;" in incremental
    for check in CHECKS:
        assert sum(line.strip().startswith(check.NAME + " ") for line in lines) == 2
    assert lines[-1].startswith("Targets: full scan under 30 s: ")
    assert "incremental at least 5x faster: " in lines[-1]
    # The change was committed in the clone, never in the source.
    assert git(tiny, "rev-parse", "HEAD") == head
    assert git(tiny, "status", "--porcelain") == ""


def test_bench_scan_refuses_a_change_to_a_file_the_repository_does_not_have(
    tiny: Path,
) -> None:
    with pytest.raises(CommandError, match=r"missing\.py is not a file of "):
        call_command("bench_scan", "--source", str(tiny), "--change", "missing.py")
