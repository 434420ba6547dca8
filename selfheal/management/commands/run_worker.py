"""`bin/manage run_worker --capabilities a,b`: the built-in worker, in the terminal.

In-process by default (it talks to the database through `selfheal.engine`): the
worker is `--name` (registered on first use, its API token printed once), or the one
`--token` belongs to. With `--api URL --token T` it talks to a running server's
worker API instead. It executes the kinds in `selfheal.task_kinds`.

SIGTERM or Ctrl-C: stop claiming, finish the current task (within `--grace`
seconds, else hand it back), mark the worker offline, exit. A second signal hands
the current task back at once.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from selfheal import task_kinds
from selfheal.models import Worker
from selfheal.worker import EngineClient, HttpEngine, InProcessEngine, WorkerLoop, WorkerRefused

TOKEN_VARIABLE = "CONTROLPLANE_WORKER_TOKEN"  # noqa: S105 (the variable's name)


class Command(BaseCommand):
    help = "Run the built-in worker: claim and execute tasks until SIGTERM or Ctrl-C."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--capabilities", default="", help="Comma-separated capabilities, e.g. db,ops."
        )
        parser.add_argument(
            "--name", default="", help="The worker's name (in-process; default: host name)."
        )
        parser.add_argument(
            "--api", default="", help="A running server's URL: use its worker API over HTTP."
        )
        parser.add_argument(
            "--token", default="", help=f"The worker's API token (or ${TOKEN_VARIABLE})."
        )
        parser.add_argument(
            "--poll", type=float, default=1.0, help="Seconds between claims when idle (1)."
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=30.0,
            help="On a stop, seconds the current task may take before it is handed back (30).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        capabilities = [c.strip() for c in options["capabilities"].split(",") if c.strip()]
        token = options["token"] or os.environ.get(TOKEN_VARIABLE, "")
        client = self._client(options["api"], token, options["name"])
        loop = WorkerLoop(
            engine=client,
            capabilities=capabilities,
            poll_seconds=options["poll"],
            grace_seconds=options["grace"],
            say=self.stdout.write,
        )
        self.stdout.write(
            f"Capabilities: {', '.join(capabilities) or '(none)'}; "
            f"kinds: {', '.join(task_kinds.known_kinds())}."
        )
        try:
            with _stop_on_signals(loop, self.stdout.write):
                tally = loop.run()
        except WorkerRefused as exc:
            raise CommandError(f"The engine refused this worker: {exc}") from None
        finally:
            if isinstance(client, HttpEngine):
                client.close()
        self.stdout.write(
            f"Stopped: {tally.completed} completed, {tally.failed} failed, "
            f"{tally.handed_back} handed back, {tally.lost} lost leases."
        )

    def _client(self, api: str, token: str, name: str) -> EngineClient:
        if api:
            if not token:
                raise CommandError(f"--api needs the worker's token: --token or ${TOKEN_VARIABLE}.")
            self.stdout.write(f"Using the worker API at {api}.")
            return HttpEngine(api, token)
        return InProcessEngine(self._worker(token, name))

    def _worker(self, token: str, name: str) -> Worker:
        if token:
            worker = Worker.authenticate(token)
            if worker is None:
                raise CommandError("This worker token is not valid (or was revoked).")
            return worker
        name = slugify(name or socket.gethostname()) or "worker"
        worker = Worker.objects.filter(name=name).first()
        if worker is not None:
            if worker.revoked_at is not None:
                raise CommandError(f"Worker {name}'s token was revoked; choose another --name.")
            return worker
        worker, raw = Worker.register(name, [])
        self.stdout.write(
            f"Registered worker {name}. Its API token, shown once (for --api mode): {raw}"
        )
        return worker


@contextmanager
def _stop_on_signals(loop: WorkerLoop, say: Any) -> Iterator[None]:
    """First SIGTERM/SIGINT: stop after the current task. Second: hand it back now."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be handled in the main thread
        return

    def stop(signum: int, frame: Any) -> None:
        if loop.stop.is_set():
            say("Second signal: handing the current task back now.")
            loop.hand_back.set()
            return
        say(
            f"{signal.Signals(signum).name}: stopping. No new claims; the current task has "
            f"{loop.grace_seconds:g} s to finish. Send it again to hand the task back now."
        )
        loop.stop.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
