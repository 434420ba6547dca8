from __future__ import annotations

import threading
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from chat import runs, streams
from chat.events import events_after
from chat.management.commands.chat_replay import event_line
from chat.models import ChatSession, Run, StopReason
from controlplane.service_accounts import service_account
from routing.models import Mode

POLL_SECONDS = 0.1


class Command(BaseCommand):
    help = (
        "Run one agent chat from the terminal, in this process, printing its events as "
        "they come. Exit code 0 when the run completes, 1 otherwise. Ctrl-C stops it."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("message", help="What to ask the agent.")
        parser.add_argument("--mode", default=Mode.NORMAL, choices=Mode.values)
        parser.add_argument(
            "--user", help="The username the run acts for (default: the service-chat-cli account)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._user(options["user"])
        session = ChatSession.objects.create(user=user, mode=options["mode"])
        try:
            run = runs.open_run(
                session, user=user, message=options["message"], mode=options["mode"]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        worker = threading.Thread(target=_drive, args=(run.pk,), name=f"chat-run-{run.pk}")
        worker.start()
        self._follow(run, worker)
        streams.wait_for_abandoned_calls(timeout=30)
        run.refresh_from_db()
        if run.stop_reason != StopReason.COMPLETED:
            raise CommandError(
                f"Run #{run.pk} {run.status}: {run.stop_reason or 'no stop reason'}. "
                f"{run.status_detail}",
                returncode=1,
            )
        self.stdout.write(f"Run #{run.pk} completed.")

    def _user(self, username: str | None) -> Any:
        if not username:
            return service_account("chat-cli")
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"There is no user {username!r}.")
        return user

    def _follow(self, run: Run, worker: threading.Thread) -> None:
        """Print the run's events until its worker is done and every event is out."""
        last_seq = 0
        while True:
            try:
                done = not worker.is_alive()
                for event in events_after(run.pk, last_seq):
                    self.stdout.write(event_line(event))
                    last_seq = event.seq
                if done:
                    return
                time.sleep(POLL_SECONDS)
            except KeyboardInterrupt:
                self.stderr.write("Stopping the run…")
                runs.request_stop(Run.objects.get(pk=run.pk), user=run.started_by)


def _drive(run_id: int) -> None:
    try:
        runs.run_agent(run_id)
    finally:
        connections.close_all()  # this thread's connections
