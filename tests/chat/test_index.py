"""The chat index: what is running now, then the sessions, filtered by the last
run's status, the mode and the owner, and searched by title and message text, in a
bounded number of queries however many there are."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from chat.models import Message, RunStatus, StopReason
from tests.chat.test_views import logged_in, make_run, make_session

pytestmark = pytest.mark.django_db


def listed(html: str) -> set[str]:
    """The sessions the list shows, by title."""
    table = html[html.index('id="sessions"') :]
    return set(re.findall(r'<td><a href="/chat/\d+/">([^<]*)</a></td>', table))


def running(html: str) -> list[int]:
    section = html[html.index('id="running-now"') : html.index('id="sessions"')]
    return [int(pk) for pk in re.findall(r'<tr id="running-(\d+)">', section)]


@pytest.fixture
def sessions(operator: Any, owner: Any) -> dict[str, Any]:
    """Four sessions, one per state of their last run, two people, three modes."""
    streaming = make_session(operator, title="Disk report", mode="ops")
    make_run(streaming, status=RunStatus.STOPPED, stop_reason=StopReason.COMPLETED)
    live = make_run(streaming, "Why is the disk full?", status=RunStatus.STREAMING)
    waiting = make_session(owner, title="Key rotation", mode="code")
    paused = make_run(waiting, "Rotate the keys", status=RunStatus.WAITING_APPROVAL)
    done = make_session(owner, title="Spend check", mode="normal")
    make_run(done, "What did we spend today?", status=RunStatus.STOPPED,
             stop_reason=StopReason.COMPLETED)  # fmt: skip
    make_session(operator, title="Empty", mode="normal")
    return {"live": live, "paused": paused}


def test_running_now_lists_every_run_not_stopped_with_its_status(
    client: Client, observer: Any, sessions: dict[str, Any]
) -> None:
    html = logged_in(client, observer).get(reverse("chat:index")).content.decode()

    assert sorted(running(html)) == sorted([sessions["live"].pk, sessions["paused"].pk])
    assert "Waiting for approval</span>" in html
    assert "Streaming</span>" in html
    assert 'ws-connect="/ws/chat/sessions/"' in html


def test_nothing_running_says_so(client: Client, operator: Any) -> None:
    html = logged_in(client, operator).get(reverse("chat:index")).content.decode()

    assert "Nothing is running" in html
    assert running(html) == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, {"Disk report", "Key rotation", "Spend check", "Empty"}),
        ({"status": "running"}, {"Disk report"}),
        ({"status": "waiting_approval"}, {"Key rotation"}),
        ({"status": "stopped"}, {"Spend check"}),
        ({"status": "never"}, {"Empty"}),
        ({"mode": "code"}, {"Key rotation"}),
        ({"mode": "normal", "status": "stopped"}, {"Spend check"}),
        ({"q": "disk"}, {"Disk report"}),  # a title
        ({"q": "ROTATE the"}, {"Key rotation"}),  # a message, any case
        ({"q": "today spend"}, set()),  # the words as typed, not each word
        ({"q": "we spend"}, {"Spend check"}),
    ],
)
def test_the_sessions_are_filtered_and_searched(
    client: Client, observer: Any, sessions: dict[str, Any], query: dict[str, str], expected: set
) -> None:
    response = logged_in(client, observer).get(reverse("chat:index"), query)

    assert response.status_code == 200
    assert listed(response.content.decode()) == expected


def test_owner_me_shows_only_the_viewers_own_sessions(
    client: Client, operator: Any, sessions: dict[str, Any]
) -> None:
    html = logged_in(client, operator).get(reverse("chat:index"), {"owner": "me"}).content
    assert listed(html.decode()) == {"Disk report", "Empty"}


def test_a_search_found_in_many_messages_lists_its_session_once(
    client: Client, operator: Any
) -> None:
    chat = make_session(operator, title="Chatty")
    for _ in range(3):
        make_run(chat, "disk again")
    Message.objects.create(session=chat, role=Message.Role.ASSISTANT, content="The disk is full.")

    html = logged_in(client, operator).get(reverse("chat:index"), {"q": "disk"}).content.decode()

    table = html[html.index('id="sessions"') :]
    assert table.count('<td><a href="/chat/') == 1


def test_a_filter_that_matches_nothing_says_so_and_offers_every_session(
    client: Client, operator: Any, sessions: dict[str, Any]
) -> None:
    html = logged_in(client, operator).get(reverse("chat:index"), {"q": "nothing like it"})

    assert b"No session matches this filter" in html.content
    assert b'href="/chat/">Show every session</a>' in html.content


def test_a_bad_filter_is_a_clear_400_not_an_error(
    client: Client, operator: Any, sessions: dict[str, Any]
) -> None:
    response = logged_in(client, operator).get(
        reverse("chat:index"), {"status": "exploded", "mode": "<script>"}
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "Status: Select a valid choice. exploded is not one of the available choices." in html
    assert "&lt;script&gt;" in html
    assert "<script>" not in html.split("</head>")[1]


def test_the_pager_keeps_the_filter(client: Client, operator: Any) -> None:
    for n in range(55):
        make_session(operator, title=f"Ops {n}", mode="ops")

    html = logged_in(client, operator).get(reverse("chat:index"), {"mode": "ops"}).content

    assert b'href="?mode=ops&amp;page=2">Older' in html


def test_the_index_reads_a_bounded_number_of_queries_however_many_runs(
    client: Client, operator: Any, django_assert_max_num_queries: Any
) -> None:
    for n in range(30):
        chat = make_session(operator, title=f"Session {n}")
        make_run(chat, f"Question {n}", status=RunStatus.STREAMING)
        make_run(chat, f"Answered {n}", status=RunStatus.STOPPED,
                 stop_reason=StopReason.COMPLETED)  # fmt: skip
    logged_in(client, operator)

    with django_assert_max_num_queries(12):
        response = client.get(reverse("chat:index"), {"q": "Question", "status": "stopped"})

    html = response.content.decode()
    assert len(running(html)) == 30
    assert len(listed(html)) == 30
