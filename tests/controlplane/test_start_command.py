"""`start` (what bin/run runs): a first start makes everything, a restart skips what is
done (no migration, no static collect, no account or demo data made again) and prints
no raw email between the password and "Serving on"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from controlplane.startup import collect_static_if_changed, pending_migrations, static_stamp

# The embedded default itself (SQLite, no broker), whatever this test run uses.
NOT_EMBEDDED = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "EMAIL_URL",
    "DJANGO_SETTINGS_MODULE",
)


def start(var_dir: Path) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key not in NOT_EMBEDDED}
    environment["VAR_DIR"] = str(var_dir)
    return subprocess.run(
        [sys.executable, "manage.py", "start", "--demo", "--no-serve"],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )


def test_a_restart_does_only_what_is_not_done_yet(tmp_path: Path) -> None:
    first = start(tmp_path)
    again = start(tmp_path)

    assert "migrations ..." in first.stdout
    assert "Static files collected." in first.stdout
    assert "Created Owner account 'owner' with password:" in first.stdout
    assert "Applying" not in again.stdout
    assert "Static files collected." not in again.stdout
    assert "Owner account 'owner' exists" in again.stdout
    assert "Created" not in again.stdout
    # The demo approval's notification: one line in the log, not the message itself.
    assert 'email to ops@example.com: "Approval needed: toggle.set' in first.stderr
    assert "MIME-Version" not in first.stdout + first.stderr


@pytest.mark.django_db
def test_nothing_is_pending_on_a_migrated_database() -> None:
    assert pending_migrations() == []


@pytest.fixture
def static_sources(tmp_path: Path, settings) -> Path:
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "extra.css").write_text("body { color: red; }")
    settings.STATICFILES_DIRS = [*settings.STATICFILES_DIRS, sources]
    settings.STATIC_ROOT = tmp_path / "var" / "static"
    return sources


def test_static_files_are_collected_again_only_when_a_source_changed(static_sources: Path) -> None:
    root = Path(settings.STATIC_ROOT)

    assert collect_static_if_changed(verbosity=0) is True
    assert (root / "extra.css").is_file()
    assert collect_static_if_changed(verbosity=0) is False

    (static_sources / "extra.css").write_text("body { color: blue; }")
    # Newer than the copy, as an edit is (whatever the file system's time resolution).
    later = (root / "extra.css").stat().st_mtime_ns + 10**10
    os.utime(static_sources / "extra.css", ns=(later, later))
    assert collect_static_if_changed(verbosity=0) is True
    assert (root / "extra.css").read_text() == "body { color: blue; }"


def test_static_files_are_collected_again_when_they_are_gone(static_sources: Path) -> None:
    assert collect_static_if_changed(verbosity=0) is True
    for path in sorted(Path(settings.STATIC_ROOT).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()

    assert static_stamp().is_file()
    assert collect_static_if_changed(verbosity=0) is True
