"""Issue states: staff resolve, unresolve and ignore fingerprints (audited, live);
ingest regresses a resolved one and ends an ignore that ran out."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from controlplane.models import AuditEvent
from healthmon import fingerprint_states
from healthmon.fingerprint_states import IgnoreFor, StateRefused
from healthmon.models import Fingerprint
from tests.healthmon.health_data import ingest_lines, make_source

pytestmark = pytest.mark.django_db

ERROR = "Payment gateway timed out after 30s for order 1234"


@pytest.fixture
def fingerprint() -> Fingerprint:
    return ingest_lines(make_source(), ERROR, 3)


def test_resolving_is_audited_with_the_actor_and_published(
    fingerprint, operator, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        fingerprint_states.resolve(fingerprint, actor=operator)

    fingerprint.refresh_from_db()
    assert fingerprint.status == Fingerprint.Status.RESOLVED
    assert fingerprint.status_changed_at is not None
    event = AuditEvent.objects.filter(action="fingerprint.resolved").get()
    assert event.actor == operator
    assert event.before == {"status": "unresolved"}
    assert event.after == {"status": "resolved"}
    assert ("health", {"type": "health.fingerprints", "ids": [fingerprint.pk], "new": []}) in (
        published
    )


def test_a_move_that_does_not_exist_is_refused_and_changes_nothing(fingerprint, operator):
    with pytest.raises(StateRefused, match="unresolved and cannot become unresolved"):
        fingerprint_states.unresolve(fingerprint, actor=operator)
    fingerprint_states.resolve(fingerprint, actor=operator)
    with pytest.raises(StateRefused, match="resolved and cannot become resolved"):
        fingerprint_states.resolve(fingerprint, actor=operator)
    assert AuditEvent.objects.filter(action__startswith="fingerprint.").count() == 1


def test_a_stale_copy_cannot_move_a_fingerprint_someone_else_moved(fingerprint, operator, owner):
    stale = Fingerprint.objects.get(pk=fingerprint.pk)
    fingerprint_states.resolve(fingerprint, actor=owner)
    with pytest.raises(StateRefused, match="no longer unresolved"):
        fingerprint_states.ignore(stale, IgnoreFor(), actor=operator)
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.RESOLVED


def test_a_resolved_fingerprint_seen_again_regresses(fingerprint, operator):
    source = fingerprint.source
    fingerprint_states.resolve(fingerprint, actor=operator)
    ingest_lines(source, ERROR)

    fingerprint.refresh_from_db()
    assert fingerprint.status == Fingerprint.Status.REGRESSED
    assert fingerprint.regressed_at is not None
    assert fingerprint.count == 4
    event = AuditEvent.objects.get(action="fingerprint.regressed")
    assert event.actor is None
    assert event.before == {"status": "resolved"}


def test_an_ignore_for_a_time_ends_when_seen_after_it(fingerprint, operator):
    fingerprint_states.ignore(fingerprint, IgnoreFor.parse("1h"), actor=operator)
    fingerprint.refresh_from_db()
    assert fingerprint.status == Fingerprint.Status.IGNORED
    assert fingerprint.ignored_until is not None
    ingest_lines(fingerprint.source, ERROR)
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.IGNORED

    Fingerprint.objects.filter(pk=fingerprint.pk).update(
        ignored_until=timezone.now() - timedelta(seconds=1)
    )
    ingest_lines(fingerprint.source, ERROR)
    fingerprint.refresh_from_db()
    assert fingerprint.status == Fingerprint.Status.UNRESOLVED
    assert fingerprint.ignored_until is None


def test_an_ignore_until_n_more_ends_at_the_nth_occurrence(fingerprint, operator):
    fingerprint_states.ignore(fingerprint, IgnoreFor.parse("", "5"), actor=operator)
    fingerprint.refresh_from_db()
    assert fingerprint.ignored_until_count == 3 + 5
    ingest_lines(fingerprint.source, ERROR, 4)
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.IGNORED
    ingest_lines(fingerprint.source, ERROR, 1)
    fingerprint.refresh_from_db()
    assert fingerprint.status == Fingerprint.Status.UNRESOLVED
    assert fingerprint.ignored_until_count is None
    event = AuditEvent.objects.filter(action="fingerprint.ignored").get()
    assert event.after == {"status": "ignored", "ignored": "until 5 more occurrences"}


def test_ignoring_forever_lasts_until_a_person_changes_it(fingerprint, operator):
    fingerprint_states.ignore(fingerprint, IgnoreFor.parse("forever"), actor=operator)
    ingest_lines(fingerprint.source, ERROR, 50)
    fingerprint.refresh_from_db()
    assert fingerprint.status == Fingerprint.Status.IGNORED
    fingerprint_states.unresolve(fingerprint, actor=operator)
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.UNRESOLVED


@pytest.mark.parametrize(
    ("duration", "more", "message"),
    [
        ("2h", "", "Ignore for one of 1h, 24h, 7d, forever"),
        ("", "ten", "'ten' is not a number"),
        ("", "0", "1 or more"),
        ("", "-4", "1 or more"),
    ],
)
def test_a_bad_ignore_is_named(duration, more, message):
    with pytest.raises(StateRefused, match=message):
        IgnoreFor.parse(duration, more)


# Through the pages: Operators and Owners act, Observers only see.


@pytest.mark.parametrize("persona", ["operator", "owner"])
def test_operators_and_owners_resolve_from_the_fingerprint_page(request, fingerprint, persona):
    user = request.getfixturevalue(persona)
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get(reverse("healthmon:fingerprint", args=[fingerprint.pk]))
    assert b'id="resolve-button"' in page.content
    token = page.cookies["csrftoken"].value
    response = client.post(
        reverse("healthmon:resolve", args=[fingerprint.pk]), {"csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.RESOLVED
    assert AuditEvent.objects.get(action="fingerprint.resolved").actor == user


def test_a_post_without_the_csrf_token_is_refused(fingerprint, operator):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(reverse("healthmon:resolve", args=[fingerprint.pk]))
    assert response.status_code == 403
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.UNRESOLVED


def test_an_observer_sees_the_state_but_cannot_change_it(client, fingerprint, observer):
    client.force_login(observer)
    page = client.get(reverse("healthmon:fingerprint", args=[fingerprint.pk]))
    assert page.status_code == 200
    assert b'id="resolve-button"' not in page.content
    assert b"Operators and Owners resolve" in page.content
    for action in ("resolve", "ignore"):
        response = client.post(reverse(f"healthmon:{action}", args=[fingerprint.pk]))
        assert response.status_code == 403
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.UNRESOLVED


def test_an_outsider_cannot_change_a_state(client, fingerprint, outsider):
    client.force_login(outsider)
    response = client.post(reverse("healthmon:resolve", args=[fingerprint.pk]))
    assert response.status_code == 403


def test_ignoring_from_the_page_for_a_bad_duration_says_why(client, fingerprint, operator):
    client.force_login(operator)
    response = client.post(
        reverse("healthmon:ignore", args=[fingerprint.pk]), {"duration": "2y"}, follow=True
    )
    assert response.status_code == 200
    assert b"Ignore for one of 1h, 24h, 7d, forever" in response.content
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.UNRESOLVED


def test_ignoring_from_the_page_until_more_occurrences(client, fingerprint, operator):
    client.force_login(operator)
    client.post(reverse("healthmon:ignore", args=[fingerprint.pk]), {"more": "10"})
    fingerprint.refresh_from_db()
    assert fingerprint.status == Fingerprint.Status.IGNORED
    assert fingerprint.ignored_until_count == 13


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_people_resolving_at_once_make_one_move(operator, owner):
    fingerprint = ingest_lines(make_source(), ERROR, 2)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def resolve(user: object) -> None:
        try:
            copy = Fingerprint.objects.get(pk=fingerprint.pk)
            barrier.wait(timeout=10)
            fingerprint_states.resolve(copy, actor=user)  # type: ignore[arg-type]
            outcomes.append("moved")
        except StateRefused:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=resolve, args=(user,)) for user in (operator, owner)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["moved", "refused"]
    assert AuditEvent.objects.filter(action="fingerprint.resolved").count() == 1
