from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from controlplane.money import dollars
from routing.router import RoutingError, route


class Command(BaseCommand):
    help = "Print the routing decision for an operation: model, fallbacks, cost, approval, budgets."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("operation")
        parser.add_argument("--mode", help="normal, deep_research, code or ops")
        parser.add_argument("--tokens", type=int, default=1000, help="Estimated prompt tokens.")
        parser.add_argument("--completion-tokens", type=int, help="Expected completion tokens.")
        parser.add_argument("--user", help="Username whose budgets apply.")
        parser.add_argument("--service", default="", help="Calling service whose budgets apply.")
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, operation: str, **options: Any) -> None:
        if options["tokens"] < 0:
            raise CommandError("--tokens cannot be negative.")
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user '{options['user']}'.")
        try:
            decision = route(
                operation,
                options["mode"],
                user,
                options["tokens"],
                service=options["service"],
                completion_tokens=options["completion_tokens"],
            )
        except RoutingError as exc:
            raise CommandError(str(exc)) from exc
        described = decision.describe()
        if options["json"]:
            self.stdout.write(json.dumps(described, indent=2))
            return
        self.stdout.write(f"operation   {described['operation']} (mode {described['mode'] or '—'})")
        self.stdout.write(f"model       {described['model']} via {described['provider']}")
        self.stdout.write(f"fallbacks   {', '.join(described['fallbacks']) or '—'}")
        self.stdout.write(f"estimate    {dollars(decision.estimated_cost)}")
        if decision.approval:
            self.stdout.write(
                f"approval    needed ({decision.approval.rule.value}): {decision.approval.reason}"
            )
        else:
            self.stdout.write("approval    not needed")
        self.stdout.write(f"budgets     {', '.join(described['budgets']) or 'none apply'}")
        for line in described["skipped"]:
            self.stdout.write(f"skipped     {line}")
