"""The built-in worker: its loop in-process and over HTTP (in a thread, stopped with
its stop event), and `manage.py run_worker` as a process that gets SIGTERM.

Transactional tests: the loop runs in another thread (or process), with a database
connection of its own that sees committed rows only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from selfheal import stuck, task_kinds
from selfheal.models import Task, TaskStatus, Worker
from selfheal.worker import HttpEngine, InProcessEngine, WorkerLoop
from tests.live_server import live_server_url  # noqa: F401  (the fixture, for these tests)
from tests.selfheal import make_task, make_worker, silence, stored

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def status_of(task: Task) -> str:
    return stored(task).status


class Running:
    """A WorkerLoop in a thread, with what it said."""

    def __init__(self, loop: WorkerLoop) -> None:
        self.loop = loop
        self.lines: list[str] = []
        loop.say = self.lines.append
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.error = exc
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.loop.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


@pytest.fixture
def run_loop() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(engine: Any, **options: Any) -> Running:
        running = Running(WorkerLoop(engine=engine, poll_seconds=0.05, **options))
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.loop.stop.set()
        running.loop.hand_back.set()
        running.thread.join(timeout=20)


# In-process.


def test_the_worker_executes_a_task_end_to_end_and_goes_offline(run_loop):
    worker, _ = make_worker("builtin", online=False)
    task = make_task("Say hello", "echo", payload={"hello": "world"}, required_capabilities=["ops"])
    running = run_loop(InProcessEngine(worker), capabilities=["ops"])
    wait_for(lambda: status_of(task) == TaskStatus.COMPLETED)
    running.stop()
    done = stored(task)
    assert done.result == {"echo": {"hello": "world"}}
    assert done.lease_worker_id == worker.pk
    worker.refresh_from_db()
    assert worker.status == Worker.Status.OFFLINE
    assert worker.capabilities == ["ops"]
    assert running.loop.tally.completed == 1
    assert any(line.startswith(f"Completed task #{task.pk}") for line in running.lines)


def test_the_worker_claims_only_the_kinds_it_knows(run_loop):
    worker, _ = make_worker("builtin")
    unknown = make_task("Unknown", "kind.nobody.knows", priority=9)
    known = make_task("Known", "noop")
    running = run_loop(InProcessEngine(worker), capabilities=[])
    wait_for(lambda: status_of(known) == TaskStatus.COMPLETED)
    running.stop()
    assert status_of(unknown) == TaskStatus.PENDING


def test_a_handler_error_is_a_retryable_failure_and_a_permanent_one_is_final(run_loop):
    def flaky(context: task_kinds.TaskContext) -> Any:
        raise ConnectionError("upstream reset")

    def hopeless(context: task_kinds.TaskContext) -> Any:
        raise task_kinds.PermanentFailure("the payload names no table")

    worker, _ = make_worker("builtin")
    retried = make_task("Flaky", "test.flaky", max_attempts=2)
    final = make_task("Hopeless", "test.hopeless")
    running = run_loop(
        InProcessEngine(worker),
        capabilities=[],
        kinds={"test.flaky": flaky, "test.hopeless": hopeless},
    )
    wait_for(lambda: status_of(retried) == status_of(final) == TaskStatus.FAILED)
    running.stop()
    assert (stored(retried).attempts, stored(retried).error) == (
        2,
        "ConnectionError: upstream reset",
    )
    assert (stored(final).attempts, stored(final).error) == (1, "the payload names no table")


def test_a_result_that_is_not_json_fails_the_task(run_loop):
    worker, _ = make_worker("builtin")
    task = make_task("Odd", "test.odd")
    running = run_loop(
        InProcessEngine(worker), capabilities=[], kinds={"test.odd": lambda context: {1, 2}}
    )
    wait_for(lambda: status_of(task) == TaskStatus.FAILED)
    running.stop()
    assert stored(task).error.startswith("The result is not JSON")


def test_a_result_the_database_cannot_store_fails_the_task_instead_of_running_it_again(
    run_loop,
):
    worker, _ = make_worker("builtin")
    task = make_task("Ratio", "test.ratio")
    running = run_loop(
        InProcessEngine(worker),
        capabilities=[],
        kinds={"test.ratio": lambda context: {"ratio": float("nan")}},
    )
    wait_for(lambda: status_of(task) == TaskStatus.FAILED)
    running.stop()
    failed = stored(task)
    assert failed.error.startswith("The result cannot be stored: 'result.ratio' is nan")
    assert failed.attempts == 1


def marked_offline_then_back(engine: Any, worker: Worker) -> list[str]:
    """One step, the sweep marks the worker offline, then two steps: what it said."""
    lines: list[str] = []
    loop = WorkerLoop(engine=engine, capabilities=[], kinds={"noop": lambda context: {}})
    loop.say = lines.append
    assert loop.step() is False  # online, nothing to do
    silence(worker, seconds=3600)
    assert Worker.objects.get(pk=worker.pk) in stuck.detect_stuck().offline
    task = make_task()
    assert loop.step() is False  # refused: it beats before it claims again
    assert status_of(task) == TaskStatus.PENDING
    assert loop.step() is True
    assert status_of(task) == TaskStatus.COMPLETED
    return lines


def test_a_worker_the_sweep_marked_offline_beats_again_before_it_claims():
    worker, _ = make_worker("builtin")
    lines = marked_offline_then_back(InProcessEngine(worker), worker)
    assert any("send a heartbeat, then claim. Beating again." in line for line in lines)


def test_the_worker_extends_its_lease_while_a_long_handler_runs(run_loop, settings):
    settings.LEASE_SECONDS = 1
    worker, _ = make_worker("builtin")
    task = make_task("Slow", "sleep", payload={"seconds": 2.5})
    running = run_loop(InProcessEngine(worker), capabilities=[])
    wait_for(lambda: status_of(task) == TaskStatus.COMPLETED)
    running.stop()
    assert stored(task).attempts == 1  # never lost its lease on the way


def test_a_stop_during_a_task_finishes_it_first(run_loop):
    worker, _ = make_worker("builtin")
    task = make_task("Slow", "sleep", payload={"seconds": 1})
    later = make_task("Later", "noop", priority=-1)
    running = run_loop(InProcessEngine(worker), capabilities=[])
    wait_for(lambda: status_of(task) == TaskStatus.RUNNING)
    running.stop()
    assert status_of(task) == TaskStatus.COMPLETED
    assert status_of(later) == TaskStatus.PENDING  # no claims after the stop
    assert Worker.objects.get(pk=worker.pk).status == Worker.Status.OFFLINE


def test_a_task_that_outlasts_the_grace_period_is_handed_back(run_loop):
    worker, _ = make_worker("builtin")
    task = make_task("Very slow", "sleep", payload={"seconds": 60})
    running = run_loop(InProcessEngine(worker), capabilities=[], grace_seconds=0.2)
    wait_for(lambda: status_of(task) == TaskStatus.RUNNING)
    running.stop()
    back = stored(task)
    assert (back.status, back.attempts, back.lease_worker_id) == (TaskStatus.PENDING, 0, None)
    assert running.loop.tally.handed_back == 1


def test_a_worker_that_lost_its_lease_gives_the_task_up(run_loop, settings):
    settings.LEASE_SECONDS = 1
    seen: list[task_kinds.TaskContext] = []

    def watchful(context: task_kinds.TaskContext) -> Any:
        seen.append(context)
        context.cancelled.wait(20)
        return {"cancelled": context.cancelled.is_set()}

    worker, _ = make_worker("builtin")
    task = make_task("Watchful", "test.watchful")
    running = run_loop(InProcessEngine(worker), capabilities=[], kinds={"test.watchful": watchful})
    wait_for(lambda: status_of(task) == TaskStatus.RUNNING)
    # Another worker took the task over (as after an expired lease): a new token.
    other, _ = make_worker("other")
    Task.objects.filter(pk=task.pk).update(fencing_token=99, lease_worker=other)
    wait_for(lambda: running.loop.tally.lost == 1)
    assert seen[0].cancelled.is_set()
    running.stop()
    assert status_of(task) == TaskStatus.RUNNING  # the other holder's, untouched


# Over HTTP.


def test_the_worker_works_through_the_http_api_too(run_loop, live_server_url):  # noqa: F811
    worker, raw = make_worker("remote", online=False)
    task = make_task("Say hello", "echo", payload={"over": "http"}, required_capabilities=["ops"])
    engine = HttpEngine(live_server_url, raw)
    try:
        running = run_loop(engine, capabilities=["ops"])
        wait_for(lambda: status_of(task) == TaskStatus.COMPLETED)
        running.stop()
    finally:
        engine.close()
    assert stored(task).result == {"echo": {"over": "http"}}
    worker.refresh_from_db()
    assert (worker.status, worker.version) == (Worker.Status.OFFLINE, "builtin-0.1")


def test_an_http_worker_the_sweep_marked_offline_beats_again_before_it_claims():
    worker, raw = make_worker("remote")
    engine = HttpEngine("http://127.0.0.1", raw)
    # The API served in this thread (on the test's connection), not by the live
    # server: its content-type ids would be stale after the previous test's flush.
    engine.http = httpx.Client(
        transport=httpx.WSGITransport(app=WSGIHandler()),
        base_url=engine.http.base_url,
        headers=engine.http.headers,
    )
    try:
        lines = marked_offline_then_back(engine, worker)
    finally:
        engine.close()
    assert any("send a heartbeat, then claim. Beating again." in line for line in lines)


def test_an_http_worker_with_a_wrong_token_is_refused(live_server_url):  # noqa: F811
    out = StringIO()
    with pytest.raises(CommandError, match="refused this worker: This worker token is not valid"):
        call_command("run_worker", "--api", live_server_url, "--token", "cpw_nope_nope", stdout=out)


# The command.


def test_the_command_registers_a_new_worker_and_prints_its_token_once(monkeypatch):
    original = WorkerLoop.step

    def step_once(loop: WorkerLoop) -> bool:
        loop.stop.set()
        return original(loop)

    monkeypatch.setattr(WorkerLoop, "step", step_once)
    out = StringIO()
    call_command("run_worker", "--name", "laptop", "--capabilities", "ops,db", stdout=out)
    worker = Worker.objects.get(name="laptop")
    token = out.getvalue().split("shown once (for --api mode): ")[1].split()[0]
    assert Worker.authenticate(token) == worker
    assert worker.capabilities == ["db", "ops"]
    assert worker.status == Worker.Status.OFFLINE
    (online,) = [line for line in out.getvalue().splitlines() if "is online" in line]
    assert online.startswith("Worker laptop is online; it executes ")
    assert {"echo", "noop", "sleep"} <= set(online.split("executes ")[1].rstrip(".").split(", "))
    assert "Stopped: 0 completed, 0 failed, 0 handed back, 0 lost leases." in out.getvalue()


def test_the_command_refuses_api_mode_without_a_token(monkeypatch):
    monkeypatch.delenv("CONTROLPLANE_WORKER_TOKEN", raising=False)
    with pytest.raises(CommandError, match="--api needs the worker's token"):
        call_command("run_worker", "--api", "http://127.0.0.1:9")


def test_the_command_refuses_a_revoked_worker():
    worker, _ = make_worker("retired", online=False)
    worker.revoked_at = worker.created_at
    worker.save()
    with pytest.raises(CommandError, match="retired's token was revoked"):
        call_command("run_worker", "--name", "retired")


def start_worker_process(*arguments: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CONTROLPLANE_LIVE_TEST_DB": str(connection.settings_dict["NAME"]),
        "CONTROLPLANE_LIVE_TEST_CACHE": str(settings.CACHES["default"].get("LOCATION", "")),
        "PYTHONUNBUFFERED": "1",
    }
    # --skip-checks: a transactional test's flush removed the critical toggles that the
    # system checks want (the migrations made them).
    command = ["manage.py", "run_worker", "--skip-checks", "--poll", "0.1", *arguments]
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_worker_process(process: subprocess.Popen[str], signum: int) -> str:
    process.send_signal(signum)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"run_worker did not stop:\n{out}") from None
    return out


def wait_for_worker(process: subprocess.Popen[str], condition: Callable[[], bool]) -> None:
    try:
        wait_for(condition, timeout=30)
    except AssertionError:
        raise AssertionError(
            f"run_worker did not get there:\n{stop_worker_process(process, signal.SIGKILL)}"
        ) from None


def test_sigterm_lets_the_worker_finish_its_task_then_go_offline():
    task = make_task("Slow", "sleep", payload={"seconds": 1.5}, required_capabilities=["ops"])
    later = make_task("Later", "noop", priority=-1)
    process = start_worker_process("--name", "terminal", "--capabilities", "ops")
    wait_for_worker(process, lambda: status_of(task) == TaskStatus.RUNNING)
    out = stop_worker_process(process, signal.SIGTERM)
    assert process.returncode == 0, out
    assert "SIGTERM: stopping. No new claims" in out
    assert stored(task).status == TaskStatus.COMPLETED
    assert stored(later).status == TaskStatus.PENDING
    assert Worker.objects.get(name="terminal").status == Worker.Status.OFFLINE
    assert "Stopped: 1 completed, 0 failed, 0 handed back, 0 lost leases." in out


def test_sigterm_hands_back_a_task_that_outlasts_the_grace_period():
    task = make_task("Very slow", "sleep", payload={"seconds": 120})
    process = start_worker_process("--name", "terminal", "--grace", "0.5")
    wait_for_worker(process, lambda: status_of(task) == TaskStatus.RUNNING)
    out = stop_worker_process(process, signal.SIGTERM)
    assert process.returncode == 0, out
    back = stored(task)
    assert (back.status, back.attempts, back.lease_worker_id) == (TaskStatus.PENDING, 0, None)
    assert f"Handed task #{task.pk} back to the queue." in out
    assert Worker.objects.get(name="terminal").status == Worker.Status.OFFLINE
