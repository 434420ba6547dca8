from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane.audit import acting_as
from routing.catalog import (
    FETCH_TIMEOUT_SECONDS,
    CatalogError,
    EmbeddingList,
    SyncReport,
    fetch_models,
    read_models,
    sync_openrouter,
    sync_seed,
)


class Command(BaseCommand):
    help = (
        "Update the model catalog from OpenRouter's public model lists (the main list and "
        "the embeddings list; prices in USD per token, per image and per request): add new "
        "models, update changed kinds, prices, context and capabilities, mark models that "
        "disappeared inactive, and report what changed and what is unpriced. All or nothing."
    )

    def add_arguments(self, parser: Any) -> None:
        origin = parser.add_mutually_exclusive_group()
        origin.add_argument(
            "--url", help="The model list to load (default: settings.OPENROUTER_MODELS_URL)."
        )
        origin.add_argument("--file", help="Load a saved model list instead of the network.")
        origin.add_argument(
            "--seed",
            action="store_true",
            help="Load the offline seed catalog shipped with the app (no network).",
        )
        parser.add_argument(
            "--embeddings-url",
            help=(
                "The embeddings model list to load beside the main one (default with no "
                "--url: settings.OPENROUTER_EMBEDDING_MODELS_URL)."
            ),
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; change nothing."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=FETCH_TIMEOUT_SECONDS,
            help="Seconds to wait for the model list.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        try:
            with acting_as(None):
                if options["seed"]:
                    reports = sync_seed(dry_run=dry_run)
                else:
                    if options["file"]:
                        document = read_models(options["file"])
                    else:
                        url = options["url"] or settings.OPENROUTER_MODELS_URL
                        document = fetch_models(url, timeout=options["timeout"])
                    embeddings = self._embeddings(options)
                    reports = [sync_openrouter(document, embeddings=embeddings, dry_run=dry_run)]
        except CatalogError as exc:
            raise CommandError(f"{exc} The catalog was not changed.") from exc
        for report in reports:
            self._print(report)
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")

    def _embeddings(self, options: dict[str, Any]) -> EmbeddingList | None:
        """The embeddings list, when one is to be read: a failure to load it leaves the
        embedding models as they are (the report says so) rather than failing the sync."""
        url = options["embeddings_url"]
        if url is None and not (options["url"] or options["file"]):
            url = settings.OPENROUTER_EMBEDDING_MODELS_URL
        if not url:
            return None
        try:
            return EmbeddingList(fetch_models(url, timeout=options["timeout"]))
        except CatalogError as exc:
            return EmbeddingList(unread=str(exc))

    def _print(self, report: SyncReport) -> None:
        first, *rest = report.lines()
        self.stdout.write(self.style.SUCCESS(first) if report.changed else first)
        for line in rest:
            if line.lstrip().startswith("!"):
                self.stdout.write(self.style.WARNING(line))
            else:
                self.stdout.write(line)
