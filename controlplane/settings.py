"""Settings for the control plane, all read from the environment through django-environ.

Every variable is listed with its default in `.env.example`. The embedded default
(SQLite, in-memory channel layer, in-process worker and scheduler) needs none of them.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta

from django.utils.csp import CSP

from controlplane import settings_healthmon
from controlplane.environment import BASE_DIR, VAR_DIR, env, site_url
from controlplane.settings_chatops import *  # noqa: F403 (the chat bots' settings)
from controlplane.settings_gateway import *  # noqa: F403 (the gateway's endpoints beyond chat)
from controlplane.settings_healthmon import *  # noqa: F403 (the health monitor's settings)


def _generated_secret(name: str, factory) -> str:
    """Read a secret kept in VAR_DIR, creating it (mode 0600) on first use.

    The embedded default must run without configuration yet never with a fixed,
    published key: each installation generates its own.
    """
    path = VAR_DIR / name
    if not path.exists():
        # Written whole under another name, then linked into place: two processes
        # starting at once (a test run and a server) never read a half-written file,
        # and the first link wins, so both use the same secret.
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        draft = VAR_DIR / f".{name}.{os.getpid()}"
        draft.touch(mode=0o600)
        draft.write_text(factory())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or _generated_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
# Keys that encrypt secrets at rest (webhook URLs, provider API keys, integration
# credentials). Comma-separated Fernet keys; the first encrypts, all decrypt, so a key
# is rotated in by putting the new one first and running `bin/manage rotate_secrets`,
# after which the old one can be dropped.
ENCRYPTION_KEYS = [
    key.strip() for key in env.list("ENCRYPTION_KEYS", default=[]) if key.strip()
] or [_generated_secret("encryption_key", _fernet_key)]
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Where bin/run serves; links in messages follow it unless SITE_URL names the public
# address (behind a proxy, or bound to every interface and reached by another name).
HOST = env.str("HOST", default="127.0.0.1")
PORT = env.int("PORT", default=8000)
SITE_URL = env.str("SITE_URL", default="") or site_url(HOST, PORT)

INSTALLED_APPS = [
    "daphne",
    "controlplane.apps.ControlplaneAdminConfig",
    "django.contrib.auth",
    "axes",  # login throttling
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "controlplane.apps.ControlplaneConfig",
    "routing",
    "chat",
    "selfheal",
    "healthmon",
    "benchmarks",  # the bench_* commands; no models, nothing imports it
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # `request.htmx`: whether htmx sent the request (a fragment or a redirect header).
    "django_htmx.middleware.HtmxMiddleware",
    "controlplane.middleware.AuditContextMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "controlplane.tiers.tier_context",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'controlplane.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's backend, with this process's write transactions queueing on a lock of
    # their own instead of SQLite's sleeping busy handler (controlplane/runtime/sqlite).
    DATABASES["default"]["ENGINE"] = "controlplane.runtime.sqlite"
    # IMMEDIATE transactions take the write lock up front, so two threads of the
    # in-process worker cannot both read then both write inside atomic blocks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    # Statements a connection runs often are prepared (planned once): psycopg's
    # default, which Django turns off for the sake of transaction-pooling PgBouncers.
    # Only statements sent with server-side parameters can be (routing.ledger's), and
    # they are planned for any parameters (a generic plan), not again on every run
    # (controlplane/runtime/prepared.py).
    options = DATABASES["default"].setdefault("OPTIONS", {})
    # A database that does not answer is reported at once (the gateway's 503), not
    # after the operating system's own connect timeout.
    options.setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=3))
    options["prepare_threshold"] = env.int("DATABASE_PREPARE_THRESHOLD", default=5) or None
    if options["prepare_threshold"] is not None:
        options["options"] = " ".join(
            filter(None, [options.get("options", ""), "-c plan_cache_mode=force_generic_plan"])
        )
    # Under ASGI each request may run on a new thread, so persistent connections
    # (CONN_MAX_AGE) would pile up until PostgreSQL refuses clients. A pool per process
    # reuses them instead; DATABASE_POOL_MAX_SIZE bounds what one process may hold.
    if env.bool("DATABASE_POOL", default=True):
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
            # Also how soon a request is answered 503 when PostgreSQL is away: the pool
            # waits this long for a connection it cannot make.
            "timeout": env.int("DATABASE_POOL_TIMEOUT", default=3),
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "controlplane.runtime.cache.SharedRedisCache", "LOCATION": REDIS_URL}
    }
    # Redis pub/sub: one PUBLISH per group send, pushed to the daphne processes whose
    # sockets joined the group (3,000-7,000 events/s, sub-millisecond latency, against
    # a few hundred for the core layer's Lua scripts). It has no capacity or expiry:
    # a process that is away when a message goes out misses it, and a slow socket's
    # queue grows in memory. Every live update is persisted first and replayed by its
    # consumer, so at-most-once delivery is enough. Pub/sub ignores Redis database
    # numbers: the prefix keeps apart deployments that share a server.
    from redis.connection import parse_url

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": f"asgi.{parse_url(REDIS_URL).get('db', 0)}.",
            },
        }
    }
else:
    # A file cache, not a per-process one: a toggle changed by a management command
    # must be seen at once by the running server, which is another process.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            # The default capacity of 100 drops messages silently under a burst. The
            # in-memory layer, safe to publish to from the in-process worker's threads.
            "BACKEND": "controlplane.runtime.publisher.LocalChannelLayer",
            "CONFIG": {"capacity": 10_000, "expiry": 60},
        }
    }

# Background work: Celery when a broker is configured, the in-process pool otherwise.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 270
CELERY_TIMEZONE = env.str("TIME_ZONE", default="UTC")
BACKGROUND_THREADS = env.int("BACKGROUND_THREADS", default=4)
# Tests run background work inline, in the caller's thread.
BACKGROUND_EAGER = env.bool("BACKGROUND_EAGER", default=False)
# The periodic schedule is ticked in-process when there is no broker (no Celery beat).
EMBEDDED_SCHEDULER = env.bool("EMBEDDED_SCHEDULER", default=not CELERY_BROKER_URL)

# Only the tier groups grant permissions (per-user ones and other groups do not):
# see controlplane.tiers.
# django-axes' backend first: it refuses a locked-out account or address before any
# password is checked, for every form that authenticates (the admin's included).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "controlplane.tiers.TierBackend"]

# Login throttling: LOGIN_FAILURE_LIMIT failed logins lock out the account (from any
# address) and, separately, the address (for any account) for LOGIN_LOCKOUT_MINUTES.
# `bin/manage unlock_login <username or address>` lifts a lockout sooner (audited).
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True  # a person's own typos do not add up across days
AXES_LOCKOUT_CALLABLE = "controlplane.views.login_locked_out"
# The address the audit trail records (REMOTE_ADDR: not a header the client can forge).
AXES_CLIENT_IP_CALLABLE = "controlplane.middleware.client_address"
# Failed attempts are seen through `bin/manage unlock_login` and the logs; the admin
# sections are the product's own.
AXES_ENABLE_ADMIN = False
AXES_VERBOSE = False  # its start-up banner on every command says nothing an operator needs

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Without collectstatic (tests, DEBUG) WhiteNoise serves straight from the finders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# No EMAIL_URL: nothing is sent and each message is logged as one line (controlplane.
# mail_log); `consolemail://` prints whole messages, MIME headers and all.
_email_url = env.str("EMAIL_URL", default="")  # not a setting: it may hold a password
_email = (
    env.email_url_config(_email_url)
    if _email_url
    else {"EMAIL_BACKEND": "controlplane.mail_log.LoggedEmailBackend"}
)
MAILERS = {
    "default": {
        "BACKEND": _email["EMAIL_BACKEND"],
        "OPTIONS": {
            key: value
            for key, value in {
                "host": _email.get("EMAIL_HOST"),
                "port": _email.get("EMAIL_PORT"),
                "username": _email.get("EMAIL_HOST_USER"),
                "password": _email.get("EMAIL_HOST_PASSWORD"),
                "use_tls": _email.get("EMAIL_USE_TLS"),
                "use_ssl": _email.get("EMAIL_USE_SSL"),
            }.items()
            if value not in (None, "")
        }
        if _email["EMAIL_BACKEND"].endswith("smtp.EmailBackend")
        else {},
    }
}
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="controlplane@localhost")

# Security. HTTPS=true turns on what a deployment behind TLS needs; the embedded
# default serves plain HTTP on 127.0.0.1, where these would lock the user out.
HTTPS = env.bool("HTTPS", default=False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if SECURE_HSTS_SECONDS and not SECURE_HSTS_PRELOAD:
    # security.W021: preloading is a one-way commitment for the whole domain; an
    # operator opts in with SECURE_HSTS_PRELOAD=true, we do not decide it for them.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
if env.bool("BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every page (Django's own middleware): scripts, styles,
# fetches and websockets only from the site itself, so injected markup can run
# nothing. Hence no inline <script>, no on*= or hx-on attributes (they need eval) and
# no style= attributes in the templates (tests/controlplane/test_content_security_policy.py
# checks); htmx is told not to inject its indicator <style> (base.html's htmx-config).
# The admin keeps to it too: Django's admin has no inline script.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF],
    # 'self' covers the page's own ws:// and wss:// (CSP level 3).
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
SECURE_CONTENT_TYPE_NOSNIFF = True

# Feature toggles that must exist and be in this state for the app to start
# ("key=on,other=off"). Checked by a system check.
CRITICAL_TOGGLES = {
    key.strip(): state.strip().lower() in {"on", "true", "1"}
    for key, _, state in (
        item.partition("=")
        for item in env.list(
            "CRITICAL_TOGGLES", default=["notifications.enabled=on", "routing.budgets.enforced=on"]
        )
    )
    if key.strip()
}
TOGGLE_CACHE_SECONDS = env.int("TOGGLE_CACHE_SECONDS", default=300)

# `bin/manage flush` would erase the audit trail and the cost log, which the database
# keeps append-only: it is refused unless this is on. Only the test settings turn it
# on (transactional tests flush after each test); not read from the environment.
FLUSH_ERASES_HISTORY = False

# Approvals that nobody decides expire after this long.
APPROVAL_TTL_HOURS = env.int("APPROVAL_TTL_HOURS", default=24)

# Notifications: retries with exponential backoff (base * 2**attempt seconds).
NOTIFY_MAX_ATTEMPTS = env.int("NOTIFY_MAX_ATTEMPTS", default=5)
NOTIFY_RETRY_BASE_SECONDS = env.float("NOTIFY_RETRY_BASE_SECONDS", default=10.0)
NOTIFY_TIMEOUT_SECONDS = env.float("NOTIFY_TIMEOUT_SECONDS", default=10.0)
NOTIFY_DEDUPE_WINDOW_SECONDS = env.int("NOTIFY_DEDUPE_WINDOW_SECONDS", default=3600)

# Routing: routes are cached in each process at most this long (and dropped at once
# on change); a model that fails is skipped for this long.
ROUTE_CACHE_SECONDS = env.int("ROUTE_CACHE_SECONDS", default=300)
MODEL_COOLDOWN_SECONDS = env.int("MODEL_COOLDOWN_SECONDS", default=60)
# Threads per web process serving the /v1/ gateway; each streamed answer holds one
# while it streams. Each keeps a database connection (pooled ones are given back).
GATEWAY_THREADS = env.int("GATEWAY_THREADS", default=16)
# Completion tokens assumed for a cost estimate when a call does not set max_tokens.
DEFAULT_COMPLETION_TOKENS = env.int("DEFAULT_COMPLETION_TOKENS", default=1024)
# The most completion tokens a call may ask of a model whose context the catalog does
# not give (otherwise its context is the cap); past it the gateway answers 400.
GATEWAY_MAX_TOKENS_CAP = env.int("GATEWAY_MAX_TOKENS_CAP", default=1_000_000)
# The public model list `bin/manage sync_models` loads prices from.
OPENROUTER_MODELS_URL = env.str(
    "OPENROUTER_MODELS_URL", default="https://openrouter.ai/api/v1/models"
)
# OpenRouter's embedding models are in a list of their own (the main one leaves them
# out); `sync_models` reads it beside the main list, as embedding models.
OPENROUTER_EMBEDDING_MODELS_URL = env.str(
    "OPENROUTER_EMBEDDING_MODELS_URL", default="https://openrouter.ai/api/v1/embeddings/models"
)
# Seconds the offline model waits between streamed pieces (about a word each) of its
# answer: a demo run streams for a few seconds, long enough to watch it and to press
# Stop; 0 answers at once (the test settings).
OFFLINE_TOKEN_DELAY_SECONDS = env.float("OFFLINE_TOKEN_DELAY_SECONDS", default=0.1)

# Self-heal task engine: a claimed task's lease (a worker extends it while working);
# how often workers heartbeat (three missed beats mark a worker offline and release
# its leases); how long a pending task may find no live capable worker before it
# asks a person (an approval) instead of waiting forever.
LEASE_SECONDS = env.int("LEASE_SECONDS", default=60)
HEARTBEAT_SECONDS = env.int("HEARTBEAT_SECONDS", default=15)
UNBLOCK_AFTER_SECONDS = env.int("UNBLOCK_AFTER_SECONDS", default=600)
# A worker's heartbeat lists at most this many capabilities (a claim as many kinds),
# each at most this long: the API answers 400 past them.
WORKER_CAPABILITIES_MAX = env.int("WORKER_CAPABILITIES_MAX", default=100)
WORKER_CAPABILITY_MAX_LENGTH = env.int("WORKER_CAPABILITY_MAX_LENGTH", default=100)

# Chat agent runs: a run with no heartbeat for this long has lost its worker and is
# stopped by the periodic check; the http_get tool reaches only these hosts (comma
# list; empty refuses every host), within a timeout and a size cap.
CHAT_HEARTBEAT_TIMEOUT_SECONDS = env.int("CHAT_HEARTBEAT_TIMEOUT_SECONDS", default=30)


def lost_run_sweep_seconds(heartbeat_timeout: float) -> float:
    """The lost-run sweep's period is part of the promise: a run whose worker died is
    stopped within the timeout plus one period, so the period is at most 5 s (and a
    sixth of a shorter timeout, never under 1 s)."""
    return max(1.0, min(5.0, heartbeat_timeout / 6))


CHAT_LOST_RUN_SWEEP_SECONDS = lost_run_sweep_seconds(CHAT_HEARTBEAT_TIMEOUT_SECONDS)
CHAT_HTTP_ALLOWLIST = env.list("CHAT_HTTP_ALLOWLIST", default=[])
CHAT_HTTP_TIMEOUT_SECONDS = env.float("CHAT_HTTP_TIMEOUT_SECONDS", default=10.0)
CHAT_HTTP_MAX_BYTES = env.int("CHAT_HTTP_MAX_BYTES", default=65_536)

# GET /metrics (controlplane.metrics): a bearer token (or "sha256:<hex digest>") or,
# without one, the networks whose direct connections may read it; several processes
# share counters through files in PROMETHEUS_MULTIPROC_DIR (wiped at deploy start).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list(
    "METRICS_ALLOWED_NETWORKS",
    default=["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
)
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}

# The one periodic schedule: Celery beat reads it in scale mode, the in-process
# scheduler ticks the same entries in embedded mode.
CELERY_BEAT_SCHEDULE = {
    "expire-approvals": {"task": "controlplane.tasks.expire_approvals", "schedule": 60.0},
    "forget-old-chat-messages": {
        "task": "controlplane.tasks.forget_old_chat_messages",
        "schedule": 3600.0,
    },
    "retry-due-notifications": {
        "task": "controlplane.tasks.retry_due_deliveries",
        "schedule": 30.0,
    },
    "write-off-stale-reservations": {
        "task": "routing.tasks.write_off_stale_reservations",
        "schedule": 600.0,
    },
    "rollup-spend": {"task": "routing.tasks.rollup_spend", "schedule": 60.0},
    "detect-spend-anomalies": {"task": "routing.tasks.detect_anomalies", "schedule": 900.0},
    "recommend-cheaper-models": {
        "task": "routing.tasks.recommend_cheaper_models",
        "schedule": 6 * 3600.0,
    },
    "detect-stuck": {"task": "selfheal.tasks.detect_stuck", "schedule": 15.0},
    "route-unclaimable": {"task": "selfheal.tasks.route_unclaimable_tasks", "schedule": 60.0},
    "evaluate-autoheal-rules": {"task": "selfheal.tasks.evaluate_autoheal_rules", "schedule": 60.0},
    "evaluate-health-alerts": {"task": "healthmon.tasks.evaluate_alerts", "schedule": 60.0},
    "sweep-health-storage": {"task": "healthmon.tasks.sweep_storage", "schedule": 600.0},
    "detect-lost-runs": {
        "task": "chat.tasks.detect_lost_runs",
        "schedule": CHAT_LOST_RUN_SWEEP_SECONDS,
    },
    # Bot messages following runs started from a chat (/run): a late one is dropped.
    "refresh-run-messages": {
        "task": "chat.tasks.refresh_run_messages",
        "schedule": CHATOPS_RUN_MESSAGE_SECONDS,  # noqa: F405 (settings_chatops)
        "options": {"expires": 10 * CHATOPS_RUN_MESSAGE_SECONDS},  # noqa: F405
    },
    "crawl-logs": {
        "task": "healthmon.tasks.crawl_logs",
        "schedule": float(settings_healthmon.HEALTHMON_CRAWL_SECONDS),
    },
    "scan-code": {
        "task": "healthmon.tasks.scan_code",
        "schedule": float(settings_healthmon.HEALTHMON_CODE_SCAN_SECONDS),
    },
    # Hourly, and the report is made once per ISO week (a unique constraint): a restart,
    # which runs every entry at once in embedded mode, or a second scheduler, adds nothing.
    "weekly-code-report": {
        "task": "healthmon.tasks.make_weekly_code_report",
        "schedule": 3600.0,
    },
}
