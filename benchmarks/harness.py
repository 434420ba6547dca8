"""What the benchmark commands share: latency percentiles, how they describe the
database and cache they measure, and daphne as a child process on this very database.

The helper processes (`python -m benchmarks.upstream`, `benchmarks.event_watcher`) do
not import it: it needs Django set up, and they must start in milliseconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from django.conf import settings
from django.core.management.base import CommandError, OutputWrapper
from django.db import OperationalError, connection

from routing.insights import percentile

APPLICATION = "controlplane.asgi:application"
START_TIMEOUT = 60.0
# How much of a child's log an error message quotes: its end, where the traceback is.
OUTPUT_TAIL = 3000


class Benchmark:
    """A benchmark run by its `bin/manage bench_*` command (which parses the arguments
    and calls `run`), writing its report to the command's `stdout`."""

    def __init__(self, stdout: OutputWrapper) -> None:
        self.stdout = stdout

    def run(self, **options: Any) -> None:
        raise NotImplementedError


# -- statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Latencies:
    """Percentiles of a run of samples, in the unit the samples were taken in."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latencies:
        ordered = sorted(samples)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 0.50),
            p95=percentile(ordered, 0.95),
            p99=percentile(ordered, 0.99),
            max=ordered[-1],
            mean=sum(ordered) / len(ordered),
        )

    def milliseconds(self) -> str:
        """p50, p95, p99 and max of samples taken in seconds, in milliseconds."""
        return (
            f"p50 {milliseconds(self.p50)}  p95 {milliseconds(self.p95)}  "
            f"p99 {milliseconds(self.p99)}  max {milliseconds(self.max)}"
        )


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# -- what is measured --------------------------------------------------------------------


def describe_database() -> str:
    connection.ensure_connection()
    vendor = connection.vendor
    name = connection.settings_dict["NAME"]
    if vendor == "sqlite":
        import sqlite3

        return f"sqlite {sqlite3.sqlite_version} ({name})"
    if vendor == "postgresql":
        version = connection.pg_version  # type: ignore[attr-defined]
        return f"postgresql {version // 10000}.{version % 10000} ({name})"
    return f"{vendor} ({name})"


def describe_cache() -> str:
    config = settings.CACHES["default"]
    return f"{config['BACKEND']} ({config.get('LOCATION', '')})"


def check_database_is_shareable(who: str) -> None:
    """`who` runs in another process: it must open this very database, which must be
    there."""
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite" and (name == ":memory:" or "mode=memory" in name):
        raise CommandError(
            f"The database is an in-memory SQLite database, which the {who} "
            "cannot open. Use a database file (the default) or PostgreSQL."
        )
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        raise CommandError(
            f"Cannot open the database {name!r} ({str(exc).strip()[:200]}). Create it "
            f"first (PostgreSQL: createdb {name}), and pass --migrate where the benchmark "
            "offers it."
        ) from None


# -- processes ---------------------------------------------------------------------------


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM cleans up like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ChildProcess:
    """A process this one started (`self.child`), stopped on exit: use it with `with`."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.child.pid if self.child else 0

    def exited(self) -> bool:
        return self.child is None or self.child.poll() is not None

    def cpu_seconds(self) -> float | None:
        """The CPU time (user and system, all threads) the process has used so far;
        None where the system does not say (it is read from Linux's /proc)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # utime and stime, the 14th and 15th fields (the 12th and 13th after the name).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Ask it to stop; kill it if it has not within 10 seconds."""
        if self.child is None:
            return
        if self.child.poll() is None:
            self.child.terminate()
        try:
            self.child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
        if self.child.stdout is not None:
            self.child.stdout.close()
        self.child = None


class DaphneProcess(ChildProcess):
    """daphne serving `application` in a child process, on this process's database and
    settings (and `settings_lines` after them), without the embedded scheduler;
    stopped on exit.

    Its output goes to a temporary log file, removed when it stops unless the caller
    keeps it: `stop(keep_log=True)` after a run that failed.
    """

    def __init__(
        self,
        application: str = APPLICATION,
        *,
        log_prefix: str = "bench-daphne-",
        env: dict[str, str] | None = None,
        settings_lines: str = "",
    ) -> None:
        super().__init__()
        self.application = application
        self.log_prefix = log_prefix
        self.env = env or {}
        self.settings_lines = settings_lines
        self.log: IO[bytes] | None = None
        self.port = 0
        self._settings_folder: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str | None:
        return self.log.name if self.log else None

    def start(self) -> str:
        """Start it (without waiting for it to listen); its URL."""
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop())
            prefix=self.log_prefix, suffix=".log", delete=False
        )
        command = [
            sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
            self.application,
        ]  # fmt: skip
        self.child = subprocess.Popen(  # noqa: S603 (this Python, a fixed command line)
            command,
            cwd=settings.BASE_DIR,
            env=self._environment(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self.url

    def _environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE,
            "EMBEDDED_SCHEDULER": "false",
            **self.env,
        }
        if self.settings_lines:
            # A settings module of its own: this process's settings, then the lines.
            self._settings_folder = tempfile.TemporaryDirectory(prefix="bench-daphne-settings-")
            folder = self._settings_folder.name
            Path(folder, "bench_daphne_settings.py").write_text(
                f"from {settings.SETTINGS_MODULE} import *  # noqa: F403\n{self.settings_lines}\n"
            )
            env["DJANGO_SETTINGS_MODULE"] = "bench_daphne_settings"
            env["PYTHONPATH"] = os.pathsep.join([folder, str(settings.BASE_DIR)])
        if connection.vendor == "sqlite":
            # The very file this process uses, whatever relative path or default led here.
            path = Path(str(connection.settings_dict["NAME"])).resolve()
            env["DATABASE_URL"] = f"sqlite:///{path}"
        return env

    def accepts_connections(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def output(self) -> str:
        """The end of what it wrote so far."""
        if self.log is None:
            return ""
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-OUTPUT_TAIL:]

    def stop(self, *, keep_log: bool = False) -> None:
        super().stop()
        if self.log is not None:
            self.log.close()
            if not keep_log:
                os.unlink(self.log.name)
            self.log = None
        if self._settings_folder is not None:
            self._settings_folder.cleanup()
            self._settings_folder = None


def wait_until_ready(
    probe: Callable[[], bool],
    process: DaphneProcess,
    timeout: float = START_TIMEOUT,
    *,
    name: str = "daphne",
) -> None:
    """Until `probe()` says the process serves (it raises if the answer shows it never
    will); a CommandError with the process's output if it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not probe():
        if process.exited() or time.monotonic() > deadline:
            raise CommandError(f"{name} did not start. Its output:\n{process.output()}")
        time.sleep(0.1)
