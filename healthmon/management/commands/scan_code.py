"""`bin/manage scan_code [--repo R]`: scan repositories now and print, per
repository, the commit scanned and the new, still-open and fixed findings by check.

Without `--repo`, every enabled repository is scanned, as the periodic schedule
does; with it, that one repository, enabled or not. Exit status: 0 when no finding
is open, 1 when findings are open, 2 when a scan failed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from healthmon.code_scans import scan_repository
from healthmon.models import Finding, Repository, Scan


class Command(BaseCommand):
    help = "Scan code repositories now; exit 0 clean, 1 findings open, 2 a scan failed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repo", help="Scan only this repository (by name).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["repo"]:
            repositories = [self._repository(options["repo"])]
        else:
            repositories = list(Repository.objects.filter(enabled=True))
            if not repositories:
                self.stdout.write(
                    "No enabled repositories. Add one in the admin (Repositories, kind "
                    "Local git path)."
                )
                return
        scans = [scan_repository(repository) for repository in repositories]
        for scan in scans:
            self.stdout.write(_summary(scan))
        if any(scan.status == Scan.Status.FAILED for scan in scans):
            raise SystemExit(2)
        if Finding.objects.filter(repository__in=repositories, status=Finding.Status.OPEN).exists():
            raise SystemExit(1)

    def _repository(self, name: str) -> Repository:
        repository = Repository.objects.filter(name=name).first()
        if repository is None:
            names = ", ".join(Repository.objects.values_list("name", flat=True))
            raise CommandError(
                f"No repository named {name!r}. Repositories: {names or 'none yet'}."
            )
        return repository


def _summary(scan: Scan) -> str:
    head = f"{scan.repository.name}: scan #{scan.pk} {scan.status}"
    if scan.status == Scan.Status.FAILED:
        return f"{head}: {scan.error}"
    lines = [f"{head} at {scan.commit[:12]} ({scan.branch}, {scan.files_total} files)"]
    for check, counts in sorted(scan.summary.items()):
        lines.append(
            f"  {check}: {counts['new']} new, {counts['open']} still open, "
            f"{counts['fixed']} fixed, {counts['intended']} intended, "
            f"{counts.get('ignored', 0)} ignored"
        )
    return "\n".join(lines)
