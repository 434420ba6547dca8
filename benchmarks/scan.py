"""`bin/manage bench_scan`: a full code scan of this product's own repository, then an
incremental one after a one-file change; wall time and peak memory of each.

The repository (`--source`, this checkout by default) is cloned at its HEAD into a
temporary directory and registered as a local repository in a throwaway SQLite
database there (the configured database is not touched). PyPI, npm and OSV are
local fakes (`benchmarks.registries`) that know every package the clone declares or
locks, at its locked version, except a few made outdated and two given an advisory,
so that the audit does all of its work. A full scan runs every check registered in
`healthmon.code_scans.CHECKS`; then one file of the clone (`--change`) gets a
function appended and committed, and an incremental scan follows.

Each scan runs in a fresh process (`benchmarks.scan_step`): its wall time is the
scan's (process start and Django's setup left out), its peak memory the process's
maximum resident set and the largest of its children's (git, ruff, deptry). Per
check times come from timing each check's `run`. Targets: the full scan under 30 s,
the incremental one at least 5 times faster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from benchmarks.harness import Benchmark, interrupt_on_sigterm
from benchmarks.registries import NPM, PYPI, Advisory, FakeRegistries
from benchmarks.scan_step import RESULT
from healthmon.code_checkout import tracked_files
from healthmon.code_checks.dependencies.manifests import Inventory, inventory
from healthmon.code_scans import CHECKS

TARGET_FULL_SECONDS = 30.0
TARGET_SPEEDUP = 5.0
STEP_TIMEOUT = 600.0
DEFAULT_CHANGE = "healthmon/code_scans.py"
CHANGE = "\n\ndef bench_scan_change() -> int:\n    return 1\n"


class ScanBenchmark(Benchmark):
    """`bin/manage bench_scan` (its arguments are parsed there), writing to `stdout`."""

    def run(self, **options: Any) -> None:
        source = Path(options["source"] or settings.BASE_DIR).resolve()
        with (
            interrupt_on_sigterm(),
            tempfile.TemporaryDirectory(prefix="bench-scan-") as folder,
            FakeRegistries() as registries,
        ):
            try:
                self._run(source, Path(folder), registries, options["change"])
            except KeyboardInterrupt:
                raise CommandError("Interrupted.") from None

    def _run(
        self, source: Path, folder: Path, registries: FakeRegistries, change: str | None
    ) -> None:
        clone = folder / "source"
        _git(folder, "clone", "--quiet", str(source), str(clone))
        files = tracked_files(clone, STEP_TIMEOUT)
        changed = change or _default_change(files)
        if changed not in files:
            raise CommandError(f"{changed} is not a file of {source} (see --change).")
        packages = populate(registries, inventory(clone, files))
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "DATABASE_URL": f"sqlite:///{folder / 'bench.sqlite3'}",
            "VAR_DIR": str(folder / "var"),
            "HEALTHMON_CODE_WORKDIR": str(folder / "work"),
            "EMBEDDED_SCHEDULER": "false",
            **registries.settings(),
        }
        self.stdout.write(
            f"bench_scan: {source} at {_git(clone, 'rev-parse', '--short', 'HEAD')} "
            f"({len(files)} tracked files); a full scan, then an incremental one after "
            f"a one-file change ({changed})"
        )
        self.stdout.write(f"Checks: {', '.join(check.NAME for check in CHECKS)}")
        self.stdout.write(f"Database: a throwaway SQLite database in {folder}")
        self.stdout.write(
            f"Registries: local fakes of PyPI, npm and OSV ({packages[PYPI]} PyPI and "
            f"{packages[NPM]} npm packages, {len(registries.advisories)} advisories)"
        )
        pk = step(environment, "prepare", str(clone))["repository"]
        full = self._scan("Full scan", environment, pk, registries)
        path = clone / changed
        path.write_text(path.read_text(encoding="utf-8") + CHANGE, encoding="utf-8")
        _git(clone, "commit", "--quiet", "-am", "bench_scan: a one-file change")
        incremental = self._scan("Incremental scan", environment, pk, registries)
        speedup = full["seconds"] / max(incremental["seconds"], 1e-6)
        under = full["seconds"] < TARGET_FULL_SECONDS
        faster = speedup >= TARGET_SPEEDUP
        self.stdout.write(
            f"Targets: full scan under {TARGET_FULL_SECONDS:.0f} s: "
            f"{'yes' if under else 'NO'} ({full['seconds']:.2f} s); incremental at least "
            f"{TARGET_SPEEDUP:.0f}x faster: {'yes' if faster else 'NO'} ({speedup:.1f}x)"
        )

    def _scan(
        self, label: str, environment: dict[str, str], pk: int, registries: FakeRegistries
    ) -> dict[str, Any]:
        asked = len(registries.requests)
        result = step(environment, "scan", str(pk))
        requests = len(registries.requests) - asked
        findings = ", ".join(f"{name} {count}" for name, count in result["findings"].items())
        self.stdout.write(
            f"{label}: {result['status']} in {result['seconds']:.2f} s; peak RSS "
            f"{_megabytes(result['rss_kb'])} (scan process), "
            f"{_megabytes(result['children_rss_kb'])} (largest child); "
            f"{requests} registry requests; findings: {findings or 'none'}"
        )
        if result["error"]:
            self.stdout.write(f"  error: {result['error']}")
        for name, seconds in result["checks"].items():
            self.stdout.write(f"  {name:<24} {seconds:7.2f} s")
        rest = result["seconds"] - sum(result["checks"].values())
        self.stdout.write(f"  {'(checkout, reconcile)':<24} {rest:7.2f} s")
        return result


def populate(registries: FakeRegistries, found: Inventory) -> dict[str, int]:
    """Publish every package at its locked (or pinned) version; the first two direct
    ones of each ecosystem a major version ahead (outdated), and an advisory on the
    first two locked ones, so that every part of the audit has work."""
    counts = {PYPI: 0, NPM: 0}
    for package in [*found.locked, *found.direct]:
        if package.version and (package.ecosystem, package.name) not in registries.latest:
            registries.publish(package.ecosystem, package.name, package.version)
            counts[package.ecosystem] += 1
    for ecosystem in (PYPI, NPM):
        direct = {p.name: p for p in found.direct if p.ecosystem == ecosystem and p.version}
        for package in [direct[name] for name in sorted(direct)][:2]:
            major = int((package.version or "0").split(".", 1)[0].lstrip("v") or 0)
            registries.publish(ecosystem, package.name, f"{major + 1}.0.0")
    for number, package in enumerate(sorted(found.locked, key=lambda p: p.name)[:2], start=1):
        registries.advise(
            Advisory(
                f"BENCH-{number}",
                package.ecosystem,
                package.name,
                fixed=f"{package.version}.post1" if package.ecosystem == PYPI else None,
                summary="An advisory the benchmark made up",
                severity="HIGH",
            )
        )
    return counts


def step(environment: dict[str, str], name: str, argument: str) -> dict[str, Any]:
    """Run one `benchmarks.scan_step` and return what it printed."""
    try:
        done = subprocess.run(  # noqa: S603 (this Python, a fixed command line)
            [sys.executable, "-m", "benchmarks.scan_step", name, argument],
            cwd=settings.BASE_DIR,
            env=environment,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandError(f"The {name} step did not finish within {STEP_TIMEOUT:.0f} s.") from None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT))
            return result
    raise CommandError(f"The {name} step failed:\n{(done.stdout + done.stderr)[-3000:]}")


def _default_change(files: dict[str, str]) -> str:
    if DEFAULT_CHANGE in files:
        return DEFAULT_CHANGE
    python = sorted(name for name in files if name.endswith(".py"))
    if not python:
        raise CommandError("The repository has no Python file to change (see --change).")
    return python[0]


def _git(where: Path, *arguments: str) -> str:
    done = subprocess.run(  # noqa: S603 (git, an argument list)
        ["git", "-c", "user.name=bench_scan", "-c", "user.email=bench@localhost", *arguments],  # noqa: S607
        cwd=where,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise CommandError(f"git {arguments[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def _megabytes(kilobytes: int) -> str:
    return f"{kilobytes / 1024:.0f} MB"
