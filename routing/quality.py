"""Quality per model: what people said of the replies each model gave (a run's reply
rated good or bad on the chat page), beside its error rate and cost, and what the
recommendations make of it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from chat.models import RunRating
from routing.models import Recommendation

MIN_RATINGS = 3  # fewer verdicts than this say nothing about a model either way
POOR_SHARE = Decimal(50)  # a model with fewer good replies than this (%) is flagged
TRAILING_DAYS = 30  # ratings are sparse: the recommendations read a month of them


@dataclass(frozen=True)
class ModelQuality:
    model: str
    good: int
    rated: int

    @property
    def good_share(self) -> Decimal | None:
        """Percent of rated replies that were good; None without any rating."""
        return Decimal(self.good * 100) / self.rated if self.rated else None

    @property
    def judged(self) -> bool:
        return self.rated >= MIN_RATINGS

    @property
    def poor(self) -> bool:
        share = self.good_share
        return self.judged and share is not None and share < POOR_SHARE


def quality_by_model(start: datetime, end: datetime) -> dict[str, ModelQuality]:
    """Each model's verdicts on the runs started in [start, end), in one query: a
    verdict counts for every model that answered in the run."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    verdicts = RunRating.objects.filter(run__created_at__gte=start, run__created_at__lt=end)
    for verdict, models in verdicts.values_list("verdict", "answered_by").order_by():
        for model in models or []:
            counts[model][0] += verdict == RunRating.Verdict.GOOD
            counts[model][1] += 1
    return {model: ModelQuality(model, good, rated) for model, (good, rated) in counts.items()}


def recent_quality() -> dict[str, ModelQuality]:
    end = timezone.now()
    return quality_by_model(end - timedelta(days=TRAILING_DAYS), end + timedelta(seconds=1))


def rated_worse(candidate: str, current: str, quality: dict[str, ModelQuality]) -> bool:
    """People rated `candidate` worse than `current`, or poorly: then switching to it
    saves money at the cost of the replies, and is not recommended."""
    theirs, ours = quality.get(candidate), quality.get(current)
    if theirs is None or not theirs.judged:
        return False
    if theirs.poor:
        return True
    if ours is None or not ours.judged:
        return False
    return (theirs.good_share or 0) < (ours.good_share or 0)


def flag_poorly_rated(quality: dict[str, ModelQuality] | None = None) -> list[Recommendation]:
    """A recommendation for each model people rated poorly (once per model; the detail
    is brought up to date)."""
    quality = recent_quality() if quality is None else quality
    made = []
    for row in sorted(quality.values(), key=lambda q: q.model):
        if not row.poor:
            continue
        recommendation, _ = Recommendation.objects.update_or_create(
            dedupe_key=f"quality:{row.model}",
            defaults={
                "kind": Recommendation.Kind.POOR_QUALITY,
                "title": f"Replies from {row.model} are rated poorly",
                "detail": (
                    f"{row.good} of {row.rated} rated replies in the last {TRAILING_DAYS} days "
                    f"were good ({row.good_share:.0f}%). Route its operations to a "
                    "better-rated model, or try one as an A/B split."
                ),
            },
        )
        made.append(recommendation)
    return made
