"""`bin/manage propose_fixes --repo R`: propose a pull request of mechanical fixes for
a GitHub repository now, from its latest successful scan, under the same rails as
after a scan (the toggle, the most open PRs, an Operator's approval before any push).

Prints the proposal and its approval, or why nothing was proposed. Exit status: 0
proposed, 1 nothing to propose, 2 preparing the fixes failed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from healthmon.code_checks import CheckFailed
from healthmon.code_pull_requests import NothingProposed, propose
from healthmon.models import Repository


class Command(BaseCommand):
    help = "Propose a pull request of ruff's safe fixes for a repository (needs approval)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repo", required=True, help="The repository's name.")

    def handle(self, *args: Any, **options: Any) -> None:
        repository = Repository.objects.filter(name=options["repo"]).first()
        if repository is None:
            names = ", ".join(Repository.objects.values_list("name", flat=True))
            raise CommandError(
                f"No repository named {options['repo']!r}. Repositories: {names or 'none yet'}."
            )
        try:
            pull_request = propose(repository)
        except NothingProposed as reason:
            self.stdout.write(f"{repository.name}: nothing proposed: {reason}")
            raise SystemExit(1) from None
        except CheckFailed as error:
            self.stderr.write(f"{repository.name}: preparing the fixes failed: {error}")
            raise SystemExit(2) from None
        self.stdout.write(
            f"{repository.name}: proposed {pull_request.title} on {pull_request.branch} "
            f"({len(pull_request.changes)} change(s)); waiting for approval "
            f"#{pull_request.approval_id} at /approvals/."
        )
