"""`bin/manage start [--demo]`: what `bin/run` does, in one process: get the embedded
default ready (migrations, system checks, static files, the Owner account and, with
--demo, the demo data; each skipped when done: `controlplane.startup`), then serve it
with daphne on HOST:PORT in the same process, so Django starts once."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from controlplane.background import stop_in_process_work
from controlplane.environment import site_url
from controlplane.startup import collect_static_if_changed, migrate_if_needed

ASGI_APPLICATION = "controlplane.asgi:application"


class Command(BaseCommand):
    help = (
        "Get the embedded default ready (migrate, check, collect static files, create the "
        "Owner account; each only when not done yet) and serve it with daphne on HOST:PORT."
    )
    # The system checks run as a step of their own, after the migrations they may need.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--demo", action="store_true", help="Load the demo data set.")
        parser.add_argument(
            "--no-serve", dest="serve", action="store_false", help="Get ready, but do not serve."
        )

    def handle(self, *args: Any, demo: bool, serve: bool, **options: Any) -> None:
        migrate_if_needed(self.stdout)
        call_command("check", stdout=self.stdout)
        if collect_static_if_changed(verbosity=0, stdout=self.stdout):
            self.stdout.write("Static files collected.")
        call_command("bootstrap", demo=demo, stdout=self.stdout)
        if serve:
            self.serve(settings.HOST, settings.PORT)

    def serve(self, host: str, port: int) -> None:
        from daphne.cli import CommandLineInterface

        # The server's threads open their own connections; the ones used to get ready
        # are not needed again.
        connections.close_all()
        self.stdout.write(
            f"Serving on {site_url(host, port)}/ "
            "(log in with the Owner account above; Ctrl-C stops)"
        )
        self.stdout.flush()
        try:
            CommandLineInterface().run(["--bind", host, "--port", str(port), ASGI_APPLICATION])
        finally:
            stop_in_process_work()
