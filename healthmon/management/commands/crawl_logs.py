"""`bin/manage crawl_logs [--source S]`: crawl Railway sources now and print what
each crawl read.

Without `--source`, every enabled Railway source is crawled, as the periodic
schedule does (sources backing off after a failure are left alone, and say until
when). With `--source`, that one source is crawled at once, backoff or not. Exits
non-zero when a crawl failed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from healthmon.models import LogSource
from healthmon.railway.crawler import CrawlOutcome, crawl_all, crawl_source


class Command(BaseCommand):
    help = "Crawl Railway log sources now; print lines, new fingerprints, duration, error."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", help="Crawl only this source (even if backing off).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["source"]:
            outcomes = [crawl_source(self._source(options["source"]), force=True)]
        else:
            outcomes = crawl_all()
            if not outcomes:
                self.stdout.write(
                    "No enabled Railway sources. Add one in the admin (Log sources, kind "
                    "Railway crawler) with a Railway integration."
                )
                return
        for outcome in outcomes:
            self.stdout.write(_line(outcome))
        failed = [outcome for outcome in outcomes if outcome.error]
        if failed:
            raise CommandError(f"{len(failed)} of {len(outcomes)} crawls failed.")

    def _source(self, name: str) -> LogSource:
        source = LogSource.objects.select_related("integration").filter(name=name).first()
        if source is None:
            names = ", ".join(
                LogSource.objects.filter(kind=LogSource.Kind.RAILWAY).values_list("name", flat=True)
            )
            raise CommandError(
                f"No log source named {name!r}. Railway sources: {names or 'none yet'}."
            )
        if source.kind != LogSource.Kind.RAILWAY:
            raise CommandError(
                f"{name} is a {source.get_kind_display()} source: only Railway sources are "
                "crawled (feed a file source with ingest_logs)."
            )
        return source


def _line(outcome: CrawlOutcome) -> str:
    name = outcome.source.name
    if outcome.skipped:
        return f"{name}: skipped, {outcome.skipped}."
    seconds = outcome.duration.total_seconds()
    summary = (
        f"{name}: {outcome.lines} lines, {outcome.new_fingerprints} new fingerprints, "
        f"{outcome.duplicates} already seen, {outcome.pages} queries, {seconds:.1f} s"
    )
    return f"{summary}, failed: {outcome.error}" if outcome.error else f"{summary}."
