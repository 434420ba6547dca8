from __future__ import annotations

import secrets
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from controlplane.approvals import request_approval
from controlplane.audit import acting_as
from controlplane.models import Approval, FeatureToggle, NotificationChannel
from controlplane.tiers import TIER_GROUPS, Tier

DEMO_OPERATOR = "demo-operator"


class Command(BaseCommand):
    help = (
        "Create the first Owner account (its generated password is printed once) and, with "
        "--demo, a small demo data set. Safe to run again: nothing is duplicated."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="owner")
        parser.add_argument("--demo", action="store_true", help="Load the demo data set.")

    def handle(self, *args: Any, username: str, demo: bool, **options: Any) -> None:
        with transaction.atomic():
            owner = self.ensure_owner(username)
            if demo:
                with acting_as(owner):
                    self.load_demo(owner)

    def ensure_owner(self, username: str) -> Any:
        users = get_user_model()
        owners = Group.objects.get(name=TIER_GROUPS[Tier.OWNER])
        existing = users.objects.filter(groups=owners, is_active=True).order_by("pk").first()
        if existing is not None:
            self.stdout.write(
                f"Owner account '{existing.get_username()}' exists; its password is not shown "
                f"again (reset it with: bin/manage changepassword {existing.get_username()})."
            )
            return existing
        password = secrets.token_urlsafe(18)
        owner = users.objects.create_user(username=username, password=password)
        owner.groups.add(owners)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created Owner account '{username}' with password: {password}\n"
                "This password is shown only once. Change it after logging in."
            )
        )
        return owner

    def load_demo(self, owner: Any) -> None:
        users = get_user_model()
        FeatureToggle.objects.get_or_create(
            key="demo.experimental-dashboard",
            defaults={
                "enabled": False,
                "description": "Demo: a feature waiting to be switched on.",
            },
        )
        if not NotificationChannel.objects.filter(name="ops-email").exists():
            NotificationChannel.objects.create(
                name="ops-email", kind=NotificationChannel.Kind.EMAIL, target="ops@example.com"
            )
        operator, created = users.objects.get_or_create(username=DEMO_OPERATOR)
        if created:
            operator.set_unusable_password()  # a demo persona, never a login with a known password
            operator.save()
            operator.groups.add(Group.objects.get(name=TIER_GROUPS[Tier.OPERATOR]))
        if not Approval.objects.filter(requested_by=operator).exists():
            toggle = FeatureToggle.objects.get(key="demo.experimental-dashboard")
            request_approval(
                action="toggle.set",
                requested_by=operator,
                reason="Demo: please switch on the experimental dashboard for the team.",
                subject=toggle,
                required_tier=Tier.OWNER,
                proposal={"key": toggle.key, "enabled": True},
            )
        # Each app adds its own demo data through a `load_demo(owner)` hook on its
        # AppConfig: the core does not import the apps above it (DESIGN.md).
        for config in apps.get_app_configs():
            hook = getattr(config, "load_demo", None)
            if callable(hook):
                said = hook(owner)
                if said:
                    self.stdout.write(str(said))
        self.stdout.write("Demo data is loaded.")
