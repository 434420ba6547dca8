from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from healthmon.models import Repository
from tests.healthmon.code_repos import CLEAN, UNUSED_IMPORT, make_repository

pytestmark = pytest.mark.usefixtures("ruff_only")


@pytest.fixture(autouse=True)
def _workdir(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"


def scan_code(*arguments: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("scan_code", *arguments, stdout=out)
    except SystemExit as exit:
        return int(exit.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_it_exits_0_when_clean_and_1_when_findings_are_open(db: Any, tmp_path: Path) -> None:
    clean = make_repository(tmp_path / "clean", {"app.py": CLEAN})
    dirty = make_repository(tmp_path / "dirty", {"app.py": UNUSED_IMPORT})
    Repository.objects.create(name="clean", path=str(clean))
    Repository.objects.create(name="dirty", path=str(dirty))

    code, out = scan_code("--repo", "clean")
    assert code == 0
    assert "clean: scan #" in out
    assert "ruff: 0 new" in out

    code, out = scan_code()
    assert code == 1
    assert "dirty: scan #" in out
    assert "ruff: 1 new" in out


def test_it_exits_2_when_a_scan_failed(db: Any, tmp_path: Path) -> None:
    Repository.objects.create(name="gone", path=str(tmp_path / "gone"))

    code, out = scan_code("--repo", "gone")

    assert code == 2
    assert "failed" in out
    assert "is not a directory" in out


def test_it_refuses_an_unknown_repository(db: Any) -> None:
    Repository.objects.create(name="app", path="/nowhere")
    with pytest.raises(CommandError, match=r"No repository named .nope.\. Repositories: app\."):
        call_command("scan_code", "--repo", "nope")
