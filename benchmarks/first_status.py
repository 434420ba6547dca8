"""`bin/manage bench_first_status`: from pressing Run to the run's status in the browser.

Starts daphne as a process of its own on the configured database and channel layer,
with agent runs on its in-process worker pool (as in the embedded mode; with a
broker configured they would wait for a Celery worker) and the offline model
answering at full speed. Headless Chromium (Playwright, Debian's chromium) opens a
chat session logged in as the benchmark's Operator and presses Run `--runs` times
(after `--warmup` untimed runs), each time once the previous run has stopped.

Two times are taken in the page (`performance.now()`), from the click on Run:

- first status: the new run's status indicator is on the page. It comes with the
  Run response (htmx swaps in the run's panel, rendered from its first events);
- first live status: the run's status has moved on from `idle` (queued), that is a
  `status` event from the worker reached the page over the websocket (or had already
  happened when the panel was rendered).

Target: p95 of the first status under 300 ms. The benchmark's chat sessions and runs
are removed at the end; its user and the runs' OperationLog rows stay (the cost log
is append-only and protects the user it names).
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import CommandError
from django.utils import timezone

from benchmarks.browser import CHROMIUM, launch_chromium
from benchmarks.events import logged_in_session
from benchmarks.harness import (
    Benchmark,
    DaphneProcess,
    Latencies,
    check_database_is_shareable,
    describe_cache,
    describe_database,
    interrupt_on_sigterm,
    wait_until_ready,
)
from chat.models import ChatSession, Run
from controlplane.tiers import TIER_GROUPS, Tier
from routing.models import OperationLog

USERNAME = "bench-first-status"
TARGET_P95_MS = 300.0
# The offline model at full speed, and static files served as they are (the
# manifest of `collectstatic` may predate them).
SERVER_SETTINGS = """
OFFLINE_TOKEN_DELAY_SECONDS = 0.0
STORAGES = {**STORAGES, "staticfiles": {
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
"""
# Marks, in the page, when Run was clicked and when the new run's status appeared.
WATCH = """
() => {
  window.benchReset = (previous) => {
    window.bench = {previous, clicked: null, shown: null, live: null, run: null};
  };
  window.benchReset(null);
  document.addEventListener("click", (event) => {
    if (event.target.closest("#run-button") && window.bench.clicked === null) {
      window.bench.clicked = performance.now();
    }
  }, true);
  const check = () => {
    const bench = window.bench;
    const panel = document.querySelector("#run-panel[data-run-id]");
    if (bench.clicked === null || !panel || panel.dataset.runId === bench.previous) return;
    const status = panel.querySelector("#run-status");
    if (!status) return;
    const now = performance.now();
    if (bench.shown === null) { bench.shown = now; bench.run = panel.dataset.runId; }
    if (bench.live === null && status.dataset.status !== "idle") bench.live = now;
  };
  new MutationObserver(check).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"],
  });
}
"""


class FirstStatusBenchmark(Benchmark):
    """`bin/manage bench_first_status` (its arguments are parsed there), writing to `stdout`."""

    def run(self, **options: Any) -> None:
        runs, warmup = options["runs"], options["warmup"]
        if runs < 1 or warmup < 0:
            raise CommandError("--runs must be at least 1 and --warmup at least 0.")
        if not os.path.exists(CHROMIUM):
            raise CommandError(f"This benchmark needs Debian's chromium at {CHROMIUM}.")
        check_database_is_shareable("daphne process")
        layer = settings.CHANNEL_LAYERS["default"]["BACKEND"]
        self.stdout.write(
            f"bench_first_status: {runs} runs (after {warmup} warm-up runs) started with "
            "the Run button in headless Chromium, against daphne"
        )
        self.stdout.write(f"Database: {describe_database()}")
        self.stdout.write(f"Cache: {describe_cache()}")
        self.stdout.write(
            f"Channel layer: {layer}; agent runs on daphne's in-process worker pool; "
            "offline model, no token delay"
        )
        started = timezone.now()
        user = bench_user()
        chat = ChatSession.objects.create(user=user, title="bench_first_status", mode="normal")
        store = logged_in_session(user)
        daphne = DaphneProcess(
            log_prefix="bench-chat-daphne-",
            env={"BACKGROUND_EAGER": "false", "CELERY_BROKER_URL": ""},
            settings_lines=SERVER_SETTINGS,
        )
        try:
            with interrupt_on_sigterm(), daphne:
                daphne.start()
                wait_until_ready(daphne.accepts_connections, daphne)
                self.stdout.write(f"daphne: {daphne.url} (pid {daphne.pid})")
                timings = press_run(
                    daphne.url,
                    chat.pk,
                    (settings.SESSION_COOKIE_NAME, store.session_key),
                    runs + warmup,
                )
        except KeyboardInterrupt:
            raise CommandError("Interrupted.") from None
        finally:
            store.delete()
            outcomes = list(Run.objects.filter(session=chat).values_list("stop_reason", flat=True))
            ChatSession.objects.filter(user=user).delete()
        timed = timings[warmup:]
        self._print(timed, outcomes)
        kept = OperationLog.objects.filter(user=user, at__gte=started).count()
        self.stdout.write(
            f"Removed the benchmark's session and its {len(outcomes)} runs; kept "
            f"{kept} OperationLog rows of their model calls (append-only) and the user "
            f"'{USERNAME}' they name."
        )

    def _print(self, timed: list[dict[str, float]], outcomes: list[str]) -> None:
        completed = sum(reason == "completed" for reason in outcomes)
        self.stdout.write(f"Runs: {len(outcomes)} in all, {completed} completed")
        verdicts = []
        for key, label in (
            ("shown", "first status (in the Run response)      "),
            ("live", "first live status (from the worker)     "),
        ):
            stats = Latencies.of([t[key] - t["clicked"] for t in timed])
            self.stdout.write(
                f"  {label} p50 {stats.p50:7.1f} ms  p95 {stats.p95:7.1f} ms  "
                f"p99 {stats.p99:7.1f} ms  max {stats.max:7.1f} ms  ({stats.count} runs)"
            )
            verdicts.append((label.strip(), stats.p95))
        label, p95 = verdicts[0]
        self.stdout.write(
            f"Target p95 under 300 ms ({label}): "
            f"{'met' if p95 < TARGET_P95_MS else 'MISSED'} ({p95:.1f} ms)"
        )
        label, p95 = verdicts[1]
        self.stdout.write(
            f"Same target for the {label}: {'met' if p95 < TARGET_P95_MS else 'MISSED'} "
            f"({p95:.1f} ms)"
        )


def bench_user() -> Any:
    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    if not user.is_active:
        user.is_active = True
        user.save(update_fields=["is_active"])
    user.groups.add(Group.objects.get(name=TIER_GROUPS[Tier.OPERATOR]))
    ChatSession.objects.filter(user=user).delete()  # left by an interrupted run
    return user


def press_run(
    base_url: str, session_id: int, cookie: tuple[str, str], times: int
) -> list[dict[str, float]]:
    """Press Run `times` times in one page; the in-page timings of each."""
    from playwright.sync_api import sync_playwright

    timings = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context()
        context.add_cookies([{"name": cookie[0], "value": cookie[1], "url": base_url}])
        page = context.new_page()
        page.goto(f"{base_url}/chat/{session_id}/")
        page.wait_for_function("() => window.htmx !== undefined")
        page.evaluate(WATCH)
        previous = None
        for number in range(times):
            page.evaluate("(previous) => window.benchReset(previous)", previous)
            page.fill("#id_message", f"Hello, run {number}.")
            page.click("#run-button")
            page.wait_for_function("() => window.bench.live !== null", timeout=15_000)
            timing = page.evaluate("() => window.bench")
            page.wait_for_selector(
                f'#run-panel[data-run-id="{timing["run"]}"] #run-status[data-status="stopped"]',
                timeout=30_000,
            )
            timings.append(timing)
            previous = timing["run"]
        browser.close()
    return timings
