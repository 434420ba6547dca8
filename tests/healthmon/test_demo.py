"""`bootstrap --demo` gives the embedded default a demo service with real log groups
and tasks opened from its error patterns; run again, it adds nothing."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from healthmon.demo import DEMO_SERVICE
from healthmon.levels import Level
from healthmon.models import Fingerprint, LogSource, MinuteCount, Sample
from selfheal.models import Task

pytestmark = pytest.mark.django_db


def bootstrap_demo(capture) -> str:
    out = StringIO()
    # The fix tasks are opened after the commit, as after any ingest.
    with capture(execute=True):
        call_command("bootstrap", "--demo", stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, object]:
    return {
        "sources": LogSource.objects.count(),
        "fingerprints": sorted(Fingerprint.objects.values_list("key", "count")),
        "minutes": MinuteCount.objects.count(),
        "samples": Sample.objects.count(),
        "tasks": Task.objects.count(),
    }


def test_bootstrap_demo_twice_shows_real_groups_and_tasks_without_duplicates(
    django_capture_on_commit_callbacks, client
):
    first = bootstrap_demo(django_capture_on_commit_callbacks)
    assert "Demo logs: 500 lines of demo-shop in" in first

    source = LogSource.objects.get(is_demo=True)
    assert source.service == DEMO_SERVICE
    groups = Fingerprint.objects.filter(service=DEMO_SERVICE)
    # Real groups: hundreds of lines, a few dozen patterns, errors among them.
    assert 10 <= groups.count() <= 60
    errors = groups.filter(level__gte=Level.ERROR)
    assert errors.exists()
    # Each error pattern opened one task, linked from its fingerprint.
    assert all(fingerprint.task_id for fingerprint in errors)
    assert Task.objects.filter(source=Task.Source.HEALTHMON).count() == errors.count()
    after_first = snapshot()

    second = bootstrap_demo(django_capture_on_commit_callbacks)
    assert "loaded already" in second
    assert snapshot() == after_first

    # The Health page, as the bootstrapped Owner sees it: the demo service, labelled.
    client.force_login(get_user_model().objects.get(username="owner"))
    html = client.get(reverse("healthmon:index")).content.decode()
    assert '<span class="badge demo">demo</span>' in html
    assert f'id="fp-{errors.first().pk}"' in html
