"""`bin/manage ingest_logs --source S FILE|-`: feed log lines from a file or stdin into
a source, for backfills and demos.

Plain lines and JSON lines are told apart per line (`healthmon.log_lines`). The file
is streamed in batches of 500 lines, each stored on its own, so a large file needs
little memory and an interrupted run keeps what it stored. The source must exist
(any kind: a Railway source can be backfilled from an export); `--create --service X`
creates a file source named S for service X first.
"""

from __future__ import annotations

import sys
from typing import Any, BinaryIO

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from healthmon.log_lines import BATCH_LINES, ingest_lines
from healthmon.models import LogSource


class Command(BaseCommand):
    help = "Ingest log lines (plain or JSON lines) from a file, or stdin with '-'."
    # Tests hand stdin in through call_command(stdin=...).
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", required=True, help="Name of the log source.")
        parser.add_argument("file", help="A file of log lines, or - for stdin.")
        parser.add_argument(
            "--create",
            action="store_true",
            help="Create the source (kind file) if it does not exist; needs --service.",
        )
        parser.add_argument("--service", help="The service of a source made with --create.")
        parser.add_argument(
            "--batch", type=int, default=BATCH_LINES, help="Lines per stored batch."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1.")
        source = self._source(options)
        if options["file"] == "-":
            stream: BinaryIO = options.get("stdin") or sys.stdin.buffer
            totals = ingest_lines(source, stream, batch_lines=options["batch"])
        else:
            try:
                with open(options["file"], "rb") as stream:
                    totals = ingest_lines(source, stream, batch_lines=options["batch"])
            except OSError as exc:
                raise CommandError(f"Cannot read {options['file']}: {exc.strerror}.") from None
        self.stdout.write(
            f"{source.name}: {totals.lines} lines read, {totals.accepted} accepted, "
            f"{totals.rejected} rejected, {totals.new_fingerprints} new fingerprints."
        )
        for reason in totals.rejections:
            self.stdout.write(f"  rejected: {reason}")

    def _source(self, options: dict[str, Any]) -> LogSource:
        name = options["source"]
        source = LogSource.objects.filter(name=name).first()
        if source is not None:
            if options["create"] and options["service"] and options["service"] != source.service:
                raise CommandError(
                    f"Source {name} exists for service {source.service}, not {options['service']}."
                )
            return source
        if not options["create"]:
            raise CommandError(
                f"No log source named {name!r}. Create one with "
                f"`ingest_logs --source {name} --create --service <service> ...`, "
                "or in the admin (Log sources)."
            )
        if not options["service"]:
            raise CommandError("--create needs --service: the service these logs are from.")
        try:
            validate_slug(name)
        except ValidationError:
            raise CommandError(
                f"{name!r} is not a valid source name: use letters, digits, - and _."
            ) from None
        source = LogSource.objects.create(
            name=name, service=options["service"][:100], kind=LogSource.Kind.FILE
        )
        self.stdout.write(f"Created file source {name} for service {source.service}.")
        return source
