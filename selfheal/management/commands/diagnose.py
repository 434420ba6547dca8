"""`bin/manage diagnose`: run the six diagnosis checks and print the report.

One line per check: severity, check, summary, evidence, suggested action; `--json`
prints the execution as JSON instead. The exit code is the worst severity: 0 ok,
1 warning, 2 critical, so a cron job or a CI step can act on it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand

from selfheal.models import PlaybookExecution
from selfheal.playbooks import run_playbook

EXIT_CODES = {"ok": 0, "warning": 1, "critical": 2}


def evidence_text(evidence: dict[str, Any]) -> str:
    return " ".join(
        f"{name}={value}"
        for name, value in evidence.items()
        if not isinstance(value, list | dict) and name != "check_ms"
    )


class Command(BaseCommand):
    help = "Diagnose the system; exit code 0 ok, 1 warning, 2 critical."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        execution = run_playbook("diagnose", trigger=PlaybookExecution.Trigger.COMMAND)
        worst = execution.worst_severity
        if execution.status == PlaybookExecution.Status.FAILED:
            worst = "critical"
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "execution": execution.pk,
                        "status": execution.status,
                        "worst": worst,
                        "duration_ms": execution.duration_ms,
                        "findings": execution.findings,
                        "error": execution.error,
                    },
                    indent=2,
                )
            )
        else:
            self.print_report(execution, worst)
        if EXIT_CODES[worst]:
            sys.exit(EXIT_CODES[worst])

    def print_report(self, execution: PlaybookExecution, worst: str) -> None:
        style = {
            "ok": self.style.SUCCESS,
            "warning": self.style.WARNING,
            "critical": self.style.ERROR,
        }
        for finding in execution.findings:
            severity = finding["severity"]
            label = style[severity](f"{severity.upper():8}")
            self.stdout.write(
                f"{label} {finding['check']:17} {finding['summary']} "
                f"[{evidence_text(finding['evidence'])}] -> {finding['suggested_action']}"
            )
        if execution.error:
            self.stdout.write(self.style.ERROR(f"The diagnosis failed: {execution.error}"))
        self.stdout.write(
            f"Worst: {worst} (execution #{execution.pk}, {execution.duration_ms} ms)."
        )
