"""Quality per model from people's verdicts, and what the recommendations make of it:
no cheaper model people rated worse, and a flag on a model rated poorly."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from routing import insights, quality
from routing.models import Recommendation
from routing.quality import ModelQuality, quality_by_model, rated_worse
from tests.routing.test_insights import (  # noqa: F401  (fixtures)
    NOON,
    catalog,
    noon_in_new_york,
    summarize_on_large,
)
from tests.routing.test_routing_ranges import rated

pytestmark = pytest.mark.django_db


def verdicts(user: Any, model: str, good: int, bad: int) -> None:
    for n in range(good + bad):
        rated(user, "good" if n < good else "bad", [model])


def test_a_verdict_counts_for_every_model_that_answered_in_its_run(operator, observer):
    rated(operator, "good", ["acme/large", "acme/small"])
    rated(observer, "bad", ["acme/large"])
    rated(operator, "bad", [])  # a run no model answered in (refused): counts for none
    found = quality_by_model(NOON - timedelta(days=1), NOON + timedelta(seconds=1))
    assert found["acme/large"] == ModelQuality("acme/large", good=1, rated=2)
    assert found["acme/large"].good_share == Decimal(50)
    assert found["acme/small"].good_share == Decimal(100)
    assert set(found) == {"acme/large", "acme/small"}


def test_a_model_is_judged_only_after_a_few_verdicts():
    assert not ModelQuality("m", good=0, rated=quality.MIN_RATINGS - 1).poor
    assert ModelQuality("m", good=1, rated=quality.MIN_RATINGS).poor
    assert not ModelQuality("m", good=2, rated=4).poor  # 50% is not poor
    assert ModelQuality("m", good=0, rated=0).good_share is None


def test_a_candidate_rated_worse_or_poorly_is_not_a_better_choice():
    rows = {
        "large": ModelQuality("large", good=9, rated=10),
        "medium": ModelQuality("medium", good=7, rated=10),
        "poor": ModelQuality("poor", good=1, rated=5),
        "new": ModelQuality("new", good=0, rated=1),
    }
    assert rated_worse("medium", "large", rows)
    assert not rated_worse("large", "medium", rows)
    assert rated_worse("poor", "unrated", rows)
    assert not rated_worse("new", "large", rows)  # too few verdicts to say
    assert not rated_worse("unrated", "large", rows)


@pytest.mark.usefixtures("summarize_on_large")
def test_no_cheaper_model_is_recommended_when_people_rated_it_worse(operator):
    verdicts(operator, "acme/large", good=4, bad=0)
    verdicts(operator, "acme/medium", good=2, bad=1)
    made = insights.recommend_cheaper_models()
    assert [r.kind for r in made] == []
    assert not Recommendation.objects.exists()


@pytest.mark.usefixtures("summarize_on_large")
def test_a_cheaper_model_rated_as_well_is_still_recommended(operator):
    verdicts(operator, "acme/large", good=3, bad=1)
    verdicts(operator, "acme/medium", good=4, bad=0)
    [recommendation] = insights.recommend_cheaper_models()
    assert recommendation.title == "Route 'summarize' to acme/medium"


@pytest.mark.usefixtures("summarize_on_large")
def test_a_model_rated_poorly_is_flagged_once(operator):
    verdicts(operator, "acme/large", good=1, bad=3)
    made = insights.recommend_cheaper_models()
    flag = next(r for r in made if r.kind == Recommendation.Kind.POOR_QUALITY)
    assert flag.title == "Replies from acme/large are rated poorly"
    assert flag.detail.startswith("1 of 4 rated replies in the last 30 days were good (25%).")
    verdicts(operator, "acme/large", good=0, bad=1)
    insights.recommend_cheaper_models()
    flags = Recommendation.objects.filter(kind=Recommendation.Kind.POOR_QUALITY)
    assert [f.detail[:12] for f in flags] == ["1 of 5 rated"]


def test_old_verdicts_are_forgotten_by_the_recommendations(operator):
    for _ in range(3):
        rated(operator, "bad", ["acme/large"], at=NOON - timedelta(days=31))
    assert quality.flag_poorly_rated() == []
