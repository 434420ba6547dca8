"""`GET /metrics` as Prometheus reads it: scraped with Django's test client (from
127.0.0.1, an internal address) and parsed with prometheus-client's own parser."""

from __future__ import annotations

from typing import Any

from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

METRICS_URL = "/metrics"


class Scrape:
    """The samples of one scrape, looked up by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def matching(self, name: str, **labels: str) -> list[float]:
        """The values of every sample called `name` whose labels include `labels`."""
        return [
            sample.value
            for sample in self.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ]

    def value(self, name: str, **labels: str) -> float:
        """The one sample called `name` with exactly these labels; 0 if none is
        written yet (a labelled counter appears on its first increment)."""
        found = [
            sample.value
            for sample in self.samples
            if sample.name == name and sample.labels == labels
        ]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else 0.0


def scrape(client: Client | None = None, **request: Any) -> Scrape:
    response = (client or Client()).get(METRICS_URL, **request)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.content.decode())
