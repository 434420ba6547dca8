"""Getting the embedded default ready to serve, doing only what is not done yet.

`bin/run` used to start Django four times before daphne (migrate, check,
collectstatic, bootstrap), each a process that loads every app: about 20 s for a
restart that had nothing to do. The `start` command does the same steps in one
process, each skipped when it is done already:

- migrations are applied only when the executor's plan has some; otherwise only the
  post_migrate handlers run, which follow the code rather than the migrations (each
  model's permissions, and what each tier grants: `controlplane.tiers`);
- static files are collected only when their sources changed since the last collect
  (a fingerprint of every source file's path, size and modification time);
- the Owner account and the demo data are created by `bootstrap`, which makes only
  what is missing.
"""

from __future__ import annotations

import hashlib
import os
from io import TextIOBase
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.finders import get_finders
from django.core.management import call_command
from django.core.management.sql import emit_post_migrate_signal
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

# collectstatic's own default ignore patterns: the files it would copy.
STATIC_IGNORE_PATTERNS = ["CVS", ".*", "*~"]


def pending_migrations(database: str = DEFAULT_DB_ALIAS) -> list[str]:
    """The migrations `migrate` would apply, as "app_label.name"."""
    executor = MigrationExecutor(connections[database])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]


def migrate_if_needed(stdout: TextIOBase, database: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Apply the pending migrations, if any, saying how many; returns those applied."""
    pending = pending_migrations(database)
    if pending:
        stdout.write(f"Applying {len(pending)} migrations ...\n")
        call_command("migrate", database=database, interactive=False, verbosity=0, stdout=stdout)
    else:
        # What migrate would still do with nothing to apply: the handlers that follow
        # the code (content types, permissions, tier grants) with the current models.
        emit_post_migrate_signal(0, False, database)
    return pending


def static_fingerprint() -> str:
    """What the collected static files were made from: every source file (its path,
    size and modification time), the storage that post-processes them and where they go."""
    digest = hashlib.sha256()
    digest.update(
        f"{settings.STORAGES['staticfiles']['BACKEND']}\0{settings.STATIC_ROOT}\n".encode()
    )
    sources = sorted(
        (path, storage.path(path))
        for finder in get_finders()
        for path, storage in finder.list(STATIC_IGNORE_PATTERNS)
    )
    for path, full_path in sources:
        stat = os.stat(full_path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def static_stamp() -> Path:
    # Beside STATIC_ROOT, not in it: everything in it is served under STATIC_URL.
    root = Path(settings.STATIC_ROOT)
    return root.parent / f".{root.name}.collected"


def collect_static_if_changed(**output: object) -> bool:
    """Run collectstatic when the sources changed since the last collect (or the
    collected files are gone); True when it ran."""
    fingerprint = static_fingerprint()
    stamp = static_stamp()
    root = Path(settings.STATIC_ROOT)
    collected = root.is_dir() and any(root.iterdir())
    if collected and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return False
    call_command("collectstatic", interactive=False, **output)
    stamp.write_text(fingerprint + "\n")
    return True
