"""`bin/manage unlock_login <username or address> --reason "..."`: lift a login lockout
(django-axes) before it runs out, recorded in the audit trail with its reason."""

from __future__ import annotations

import ipaddress
from typing import Any

from axes.models import AccessAttempt
from axes.utils import reset
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Sum

from controlplane import audit


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class Command(BaseCommand):
    help = (
        "Forget the failed logins of an account (a username) or an address, which lifts "
        "its lockout at once. Audited with its reason."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("who", help="A username, or an IP address.")
        parser.add_argument("--reason", required=True, help="Why, for the audit trail.")

    def handle(self, *args: Any, who: str, reason: str, **options: Any) -> None:
        field = "ip_address" if _is_address(who) else "username"
        attempts = AccessAttempt.objects.filter(**{field: who})
        with transaction.atomic():
            failures = attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            reset(**{"ip" if field == "ip_address" else "username": who})
            account = (
                get_user_model().objects.filter(username=who).first()
                if field == "username"
                else None
            )
            audit.record(
                "login.unlocked",
                account,
                target_repr=who,
                before={"failures": failures},
                after={"address" if field == "ip_address" else "username": who, "reason": reason},
            )
        if failures:
            forgotten = f"Unlocked {who}: {failures} failed logins forgotten."
            self.stdout.write(self.style.SUCCESS(forgotten))
        else:
            self.stdout.write(f"No failed logins on record for {who}; nothing was locked.")
