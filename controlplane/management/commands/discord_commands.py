from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.audit import record
from controlplane.discord import DiscordError
from controlplane.discord_integration import register_commands
from controlplane.models import Integration


class Command(BaseCommand):
    help = (
        "Register a Discord integration's slash commands with Discord (/link, /unlink, "
        "/help and every command the apps registered), replacing the application's "
        "global commands. Run it again after an upgrade adds a command."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("integration", help="The Discord integration's name.")

    def handle(self, *args: Any, integration: str, **options: Any) -> None:
        found = Integration.objects.filter(name=integration, kind=Integration.Kind.DISCORD).first()
        if found is None:
            names = Integration.objects.filter(kind=Integration.Kind.DISCORD).values_list(
                "name", flat=True
            )
            raise CommandError(
                f"No Discord integration '{integration}'. Discord integrations: "
                f"{', '.join(names) or 'none yet'}."
            )
        try:
            message = register_commands(found)
        except DiscordError as exc:
            raise CommandError(str(exc)) from exc
        record("integration.commands_registered", found)
        self.stdout.write(self.style.SUCCESS(message))
