"""`bin/manage code_report [--repo R] [--send]`: make a code-health report of the last
seven days now, store it (it is listed under Health, Code health reports) and print
it; with `--send`, also send its summary through the enabled notification channels.

Exit status: 0 when the report is made (and, with `--send`, handed to at least one
channel); 1 for bad input (an unknown repository); 2 when `--send` found no channel
to send to (none enabled, or notifications switched off): the report is stored anyway.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from healthmon.code_reports import make_report, report_url, send_report, seven_days_before
from healthmon.models import CodeReport, Repository


class Command(BaseCommand):
    help = "Make, store and print a code-health report of the last seven days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repo", help="Report on this repository only (by name).")
        parser.add_argument(
            "--send", action="store_true", help="Also send it to the notification channels."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        repository = self._repository(options["repo"]) if options["repo"] else None
        report = make_report(
            CodeReport.Trigger.ON_DEMAND, seven_days_before(timezone.now()), repository
        )
        self.stdout.write(f"{report.subject}\n{report.text}\n{report_url(report)}")
        if not options["send"]:
            return
        channels = send_report(report)
        if not channels:
            self.stderr.write(
                "Not sent: no notification channel is enabled, or notifications are "
                "switched off (toggle notifications.enabled). The report is stored."
            )
            raise SystemExit(2)
        self.stdout.write(f"Sent to {channels} channel{'s' if channels != 1 else ''}.")

    def _repository(self, name: str) -> Repository:
        repository = Repository.objects.filter(name=name).first()
        if repository is None:
            names = ", ".join(Repository.objects.values_list("name", flat=True))
            raise CommandError(
                f"No repository named {name!r}. Repositories: {names or 'none yet'}."
            )
        return repository
