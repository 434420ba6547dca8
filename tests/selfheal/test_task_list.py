"""The Engine page's task list (filters by status, kind and worker; the history of
finished tasks a page at a time), its throughput, its live re-render with the page's
own filter, and its empty state for the in-process and the external worker."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext

from selfheal import engine
from selfheal.consumers import render_fragments
from selfheal.models import Task, TaskStatus, Worker
from selfheal.task_list import PAGE_SIZE, throughput
from tests.selfheal import make_task, make_worker

pytestmark = pytest.mark.django_db

ENGINE = "/selfheal/engine/"


def done_by(worker: Worker, title: str, kind: str = "noop") -> Task:
    """A task `worker` claimed and completed."""
    task = make_task(title, kind)
    claimed = engine.claim(worker, kinds=[kind])
    assert claimed is not None
    assert claimed.pk == task.pk
    return engine.complete(worker, task.pk, claimed.fencing_token)


def listed(html: str) -> list[int]:
    """The task ids in the task list, in order."""
    start = html.index('id="engine-tasks"')
    return [int(pk) for pk in re.findall(r'<tr id="task-(\d+)"', html[start:])]


def test_every_tier_sees_the_task_list_newest_activity_first(client: Any, observer: Any) -> None:
    first = make_task("First")
    second = make_task("Second")
    client.force_login(observer)

    html = client.get(ENGINE).content.decode()

    assert listed(html) == [second.pk, first.pk]
    assert "retry-button" not in html  # an Observer only sees
    assert 'id="tasks-count">2<' in html


def test_the_list_filters_by_status_kind_and_worker(client: Any, operator: Any) -> None:
    alpha, _ = make_worker("alpha")
    beta, _ = make_worker("beta")
    by_alpha = done_by(alpha, "Alpha's", "echo")
    by_beta = done_by(beta, "Beta's", "noop")
    waiting = make_task("Waiting", "echo")
    client.force_login(operator)

    assert listed(client.get(ENGINE, {"worker": "alpha"}).content.decode()) == [by_alpha.pk]
    assert listed(client.get(ENGINE, {"kind": "echo"}).content.decode()) == [
        waiting.pk,
        by_alpha.pk,
    ]
    assert listed(client.get(ENGINE, {"status": "pending"}).content.decode()) == [waiting.pk]
    assert listed(client.get(ENGINE, {"status": "open"}).content.decode()) == [waiting.pk]
    both = client.get(ENGINE, {"status": "completed", "kind": "noop", "worker": "beta"})
    assert listed(both.content.decode()) == [by_beta.pk]


def test_the_filter_keeps_its_choices_and_offers_the_kinds_and_workers_there_are(
    client: Any, operator: Any
) -> None:
    make_worker("alpha")
    make_task("A", "echo")
    client.force_login(operator)

    html = client.get(ENGINE, {"status": "finished", "kind": "echo"}).content.decode()

    assert '<option value="finished" selected>' in html
    assert '<option value="echo" selected>echo</option>' in html
    assert '<option value="alpha">alpha</option>' in html
    assert "No task matches this filter." in html


def test_the_history_lists_finished_tasks_newest_finish_first_a_page_at_a_time(
    client: Any, operator: Any
) -> None:
    worker, _ = make_worker("alpha")
    finished = [done_by(worker, f"Done {n}") for n in range(PAGE_SIZE + 5)]
    cancelled = engine.transition(make_task("Dropped"), TaskStatus.CANCELLED)
    make_task("Still open")
    client.force_login(operator)

    html = client.get(ENGINE, {"status": "finished"}).content.decode()

    newest_first = [cancelled.pk] + [task.pk for task in reversed(finished)]
    assert listed(html) == newest_first[:PAGE_SIZE]
    assert "Page 1 of 2" in html
    assert 'href="?status=finished&amp;p=2#engine-tasks"' in html
    second = client.get(ENGINE, {"status": "finished", "p": "2"}).content.decode()
    assert listed(second) == newest_first[PAGE_SIZE:]
    # The live re-render shows the same filter and page.
    assert 'ws-connect="/ws/selfheal/?page=engine&amp;status=finished&amp;p=2"' in second


def test_a_bad_filter_is_a_clear_error_not_a_500(client: Any, observer: Any) -> None:
    make_task("Any")
    client.force_login(observer)

    response = client.get(ENGINE, {"status": "exploded", "kind": "x" * 101})

    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="task-filter-errors"' in html
    assert "Select a valid choice" in html
    assert listed(html) == []


@pytest.mark.parametrize("page", ["abc", "-1", "999"])
def test_a_page_out_of_range_shows_a_page_there_is(client: Any, observer: Any, page: str) -> None:
    task = make_task("Only")
    client.force_login(observer)

    response = client.get(ENGINE, {"p": page})

    assert response.status_code == 200
    assert listed(response.content.decode()) == [task.pk]


def test_the_engine_page_with_a_filtered_list_reads_a_fixed_number_of_queries(
    client: Any, operator: Any, django_assert_max_num_queries: Any
) -> None:
    def grow(n: int) -> None:
        worker, _ = make_worker(f"w-{Worker.objects.count()}")
        for i in range(n):
            done_by(worker, f"t{i}", "echo" if i % 2 else "noop")
            make_task(f"p{i}", "chat.request")

    client.force_login(operator)
    grow(2)
    query = {"status": "finished", "kind": "echo"}
    client.get(ENGINE, query)
    with CaptureQueriesContext(connection) as few:
        assert client.get(ENGINE, query).status_code == 200
    grow(30)
    with CaptureQueriesContext(connection) as many:
        assert client.get(ENGINE, query).status_code == 200

    assert len(many) == len(few)
    with django_assert_max_num_queries(30):
        client.get(ENGINE, {"status": "finished", "worker": "w-1", "p": "2"})


# -- throughput ----------------------------------------------------------------------------


def finished_at(task: Task, moment: datetime, status: str = TaskStatus.COMPLETED) -> None:
    Task.objects.filter(pk=task.pk).update(finished_at=moment, status=status)


def test_throughput_counts_finished_tasks_per_minute_and_per_hour() -> None:
    now = datetime(2026, 12, 3, 18, 30, 20, tzinfo=UTC)
    for seconds in (5, 10, 50):  # two in 18:30, one in 18:29
        finished_at(make_task(), now - timedelta(seconds=seconds))
    finished_at(make_task(), now - timedelta(minutes=2), TaskStatus.FAILED)
    finished_at(make_task(), now - timedelta(hours=3))
    finished_at(make_task(), now - timedelta(days=2))  # outside both windows
    engine.transition(make_task(), TaskStatus.CANCELLED)  # not work done

    minutes = throughput(now, timedelta(hours=1), timedelta(minutes=1), "minute", "last hour")
    hours = throughput(now, timedelta(hours=24), timedelta(hours=1), "hour", "last day")

    assert len(minutes.slots) == 60
    assert minutes.slots[-1].start == datetime(2026, 12, 3, 18, 30, tzinfo=UTC)
    assert [s.completed for s in minutes.slots[-3:]] == [0, 1, 2]
    assert minutes.slots[-3].failed == 1
    assert (minutes.completed, minutes.failed, minutes.peak) == (3, 1, 2)
    assert len(hours.slots) == 24
    assert (hours.completed, hours.failed) == (4, 1)
    assert hours.slots[-4].completed == 1  # 15:30 falls in the 15:00 hour


def test_the_engine_page_shows_the_throughput(client: Any, observer: Any) -> None:
    worker, _ = make_worker("alpha")
    for n in range(3):
        done_by(worker, f"Done {n}")
    client.force_login(observer)

    html = client.get(ENGINE).content.decode()

    section = html[html.index('id="throughput-minute"') :]
    assert '<strong class="throughput-done">3</strong> done in the last 60 minutes' in section
    assert 'class="bar-done"' in section
    assert "style=" not in section.split("</figure>")[0]  # the CSP allows no inline style


# -- live, and the empty state ---------------------------------------------------------------


def test_the_live_re_render_lists_tasks_as_the_socket_filters_them(observer: Any) -> None:
    worker, _ = make_worker("alpha")
    done = done_by(worker, "Done")
    make_task("Open")

    html = render_fragments(
        ["tasks", "throughput"], observer, QueryDict("page=engine&status=finished")
    )

    assert 'id="engine-tasks" class="card wide" hx-swap-oob="true"' in html
    assert listed(html) == [done.pk]
    assert 'id="engine-throughput" class="card wide" hx-swap-oob="true"' in html


def test_the_empty_state_tells_the_in_process_worker_from_an_external_one(
    client: Any, observer: Any, settings: Any
) -> None:
    settings.SITE_URL = "https://cp.example.com"
    client.force_login(observer)

    html = client.get(ENGINE).content.decode()
    empty = html[
        html.index('id="workers-empty"') : html.index("</section>", html.index("workers-empty"))
    ]

    in_process, external = empty.split("On another machine")
    assert "bin/manage run_worker --capabilities a,b" in in_process
    assert "no token to note" in in_process
    assert "--token" not in in_process
    assert "run_worker --api https://cp.example.com --token" in external
    assert "token is shown once" in external
