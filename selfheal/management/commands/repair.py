"""`bin/manage repair [--dry-run]`: run the repair playbook and print what it found,
what it did (or, with --dry-run, would do) and what improved."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from selfheal.management.commands.diagnose import evidence_text
from selfheal.models import PlaybookExecution
from selfheal.playbooks import run_playbook


class Command(BaseCommand):
    help = (
        "Repair common issues within caps (over a cap it asks for approval), then diagnose "
        "again. --dry-run changes nothing and prints what it would do."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would be done; change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        execution = run_playbook(
            "repair", dry_run=dry_run, trigger=PlaybookExecution.Trigger.COMMAND
        )
        self.stdout.write("Findings:")
        for finding in execution.findings:
            self.stdout.write(
                f"  {finding['severity'].upper():8} {finding['check']:17} {finding['summary']} "
                f"[{evidence_text(finding['evidence'])}]"
            )
        self.stdout.write("Actions (would do):" if dry_run else "Actions:")
        for action in execution.actions:
            if action["action"] == "step":
                self.stdout.write(f"  {action['description']} ({action['declared']})")
            else:
                mark = (
                    "would"
                    if not action["performed"]
                    else "done"
                    if action["action"] != "read"
                    else "note"
                )
                self.stdout.write(f"    [{mark}] {action['description']}")
        self.stdout.write("Verification:")
        self.stdout.write(f"  {execution.verification.get('summary', '')}")
        for check in execution.verification.get("checks", []):
            moved = " ".join(f"{k} {a}->{b}" for k, (a, b) in check["evidence"].items())
            self.stdout.write(
                f"  {check['check']:17} {check['before']} -> {check['after']} ({check['change']})"
                + (f" [{moved}]" if moved else "")
            )
        if execution.error:
            self.stdout.write(self.style.ERROR(f"Repair failed: {execution.error}"))
        self.stdout.write(f"Execution #{execution.pk}: {execution.status}. {execution.summary}")
