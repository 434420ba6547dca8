"""The health monitor's settings (service logs and code), read from the environment
like the rest; `controlplane.settings` takes them in whole. Every variable is listed
with its default in `.env.example`."""

from __future__ import annotations

from pathlib import Path

from controlplane.environment import VAR_DIR, env

# The log monitor (healthmon): the level and count at which a fingerprint opens a task,
# the samples kept of each, and how long its counts are kept (.env.example says more).
HEALTHMON_TASK_MIN_LEVEL = env.str("HEALTHMON_TASK_MIN_LEVEL", default="error")
HEALTHMON_TASK_MIN_COUNT = env.int("HEALTHMON_TASK_MIN_COUNT", default=1)
HEALTHMON_SAMPLES_PER_FINGERPRINT = max(3, env.int("HEALTHMON_SAMPLES_PER_FINGERPRINT", default=20))
HEALTHMON_MINUTE_COUNTS_DAYS = env.int("HEALTHMON_MINUTE_COUNTS_DAYS", default=1)
HEALTHMON_HOURLY_COUNTS_DAYS = env.int("HEALTHMON_HOURLY_COUNTS_DAYS", default=30)
HEALTHMON_FINGERPRINT_DAYS = env.int("HEALTHMON_FINGERPRINT_DAYS", default=90)
# The Railway crawler (README, "How crawling works" and "Faults"): its period, page
# size, overlap re-read, first lookback, longest rate-limit wait, longest backoff, and
# the crawl records kept per source.
HEALTHMON_CRAWL_SECONDS = env.int("HEALTHMON_CRAWL_SECONDS", default=300)
HEALTHMON_CRAWL_PAGE_LINES = env.int("HEALTHMON_CRAWL_PAGE_LINES", default=500)
HEALTHMON_CRAWL_OVERLAP_SECONDS = env.int("HEALTHMON_CRAWL_OVERLAP_SECONDS", default=60)
HEALTHMON_CRAWL_LOOKBACK_MINUTES = env.int("HEALTHMON_CRAWL_LOOKBACK_MINUTES", default=60)
HEALTHMON_CRAWL_MAX_WAIT_SECONDS = env.int("HEALTHMON_CRAWL_MAX_WAIT_SECONDS", default=30)
HEALTHMON_CRAWL_BACKOFF_MAX_SECONDS = env.int("HEALTHMON_CRAWL_BACKOFF_MAX_SECONDS", default=3600)
HEALTHMON_CRAWL_RECORDS_KEPT = env.int("HEALTHMON_CRAWL_RECORDS_KEPT", default=200)
# Alert episodes are kept HEALTHMON_ALERT_DAYS after they clear. When one evaluation
# opens (or clears) more than HEALTHMON_ALERT_STORM_SIZE episodes of one rule, they
# are told in one summary message instead of one message each.
HEALTHMON_ALERT_DAYS = env.int("HEALTHMON_ALERT_DAYS", default=90)
HEALTHMON_ALERT_STORM_SIZE = max(1, env.int("HEALTHMON_ALERT_STORM_SIZE", default=10))
# POST /v1/logs: the largest body, as sent or decompressed (413 past it), and the records
# a second one source may push (429 past it; 0: no limit).
HEALTHMON_OTLP_MAX_BYTES = env.int("HEALTHMON_OTLP_MAX_BYTES", default=8 * 1024 * 1024)
HEALTHMON_OTLP_RECORDS_PER_SECOND = env.int("HEALTHMON_OTLP_RECORDS_PER_SECOND", default=50_000)
# Code health: scan period, checkout directory, time limit of a scan, and the least
# severity (info, low, medium, high, critical) whose findings open a task.
HEALTHMON_CODE_SCAN_SECONDS = env.int("HEALTHMON_CODE_SCAN_SECONDS", default=24 * 3600)
HEALTHMON_CODE_WORKDIR = Path(env.str("HEALTHMON_CODE_WORKDIR", default="") or VAR_DIR / "code")
HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS = env.int("HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS", default=900)
HEALTHMON_CODE_TASK_MIN_SEVERITY = env.str("HEALTHMON_CODE_TASK_MIN_SEVERITY", default="high")
# The CI check reads at most this many check runs of a commit, and annotations of one
# run, from GitHub's checks API (100 a request).
HEALTHMON_CODE_CI_MAX_CHECK_RUNS = env.int("HEALTHMON_CODE_CI_MAX_CHECK_RUNS", default=300)
HEALTHMON_CODE_CI_MAX_ANNOTATIONS = env.int("HEALTHMON_CODE_CI_MAX_ANNOTATIONS", default=1000)
# Code health pull requests (behind the toggle codehealth.autopr.enabled, each approved
# by an Operator): the most proposed or open product PRs per repository, and the
# author of their commits ("Name <email>").
HEALTHMON_CODE_MAX_OPEN_PRS = env.int("HEALTHMON_CODE_MAX_OPEN_PRS", default=3)
HEALTHMON_CODE_PR_AUTHOR = env.str(
    "HEALTHMON_CODE_PR_AUTHOR", default="AI Ops Control Plane <code-health@localhost>"
)
# The dependency audit's registries (base URLs: point them at a mirror, or at local
# fakes in tests and bench_scan), the time limit of one request, the requests at
# once, and how long an answer is reused before the registry is asked again.
HEALTHMON_CODE_PYPI_URL = env.str("HEALTHMON_CODE_PYPI_URL", default="https://pypi.org")
HEALTHMON_CODE_NPM_URL = env.str("HEALTHMON_CODE_NPM_URL", default="https://registry.npmjs.org")
HEALTHMON_CODE_OSV_URL = env.str("HEALTHMON_CODE_OSV_URL", default="https://api.osv.dev")
HEALTHMON_CODE_REGISTRY_TIMEOUT_SECONDS = env.float(
    "HEALTHMON_CODE_REGISTRY_TIMEOUT_SECONDS", default=10.0
)
HEALTHMON_CODE_REGISTRY_CONCURRENCY = max(
    1, env.int("HEALTHMON_CODE_REGISTRY_CONCURRENCY", default=8)
)
HEALTHMON_CODE_REGISTRY_CACHE_SECONDS = env.int(
    "HEALTHMON_CODE_REGISTRY_CACHE_SECONDS", default=6 * 3600
)
