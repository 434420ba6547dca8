"""Stale code: what nothing uses, each with its confidence.

Reported, never above low severity (low at 80% confidence and above, info below):
- definitions never used (vulture's functions, methods, classes, properties, and
  unreachable code, with vulture's confidence), leaving out what Django, Celery,
  Channels and pytest call by name (`conventions`), and counting as used every name
  a template reads and every string that reads like a name;
- modules nothing imports nor names in a string (settings, pyproject), apart from
  entry points (manage.py, settings, migrations, tests, models/admin/apps/urls/
  views/tasks/consumers/signals..., management commands, template tags, scripts);
- URL names (`path(..., name=...)`) that no reverse, redirect, resolve_url or
  `{% url %}` uses, with the urls module's app namespace;
- templates no render, template_name, get_template, include or extends names;
- for this product's own repository, agent tools and management commands its
  history says never ran (`history`);
- a Python file that does not parse, as info: it is skipped, and said.

Incremental: each file's facts (`facts`) are extracted once per git blob and kept
in the check's cache; a scan reads the facts of unchanged files back and extracts
only new blobs, then joins all of them (`reports`), which is cheap.
"""

from __future__ import annotations

from pathlib import Path

from healthmon.code_checks import Reported, ScanContext, distinct
from healthmon.code_checks.stale import conventions, facts, reports

NAME = reports.NAME
# Part of every cache key: a change to what is extracted makes old facts unused.
FACTS_VERSION = 2
MAX_FILE_BYTES = 1_000_000


def kind_of(path: str) -> str | None:
    """Which facts a file has: python, template, configuration, or None (none)."""
    if conventions.is_skipped(path):
        return None
    if path.endswith(".py"):
        return "python"
    if conventions.is_template_file(path):
        return "template"
    if conventions.is_configuration_file(path):
        return "configuration"
    return None


def run(context: ScanContext) -> list[Reported]:
    wanted = [(path, kind) for path in sorted(context.files) if (kind := kind_of(path))]
    by_kind: dict[str, dict[str, facts.Facts]] = {
        "python": {},
        "template": {},
        "configuration": {},
    }
    keys = set()
    extracted = 0
    for done, (path, kind) in enumerate(wanted, start=1):
        key = f"facts-{FACTS_VERSION}-{kind}-{context.files[path]}"
        keys.add(key)
        found = context.cached(key)
        if not isinstance(found, dict):
            found = extract(context.path / path, kind)
            context.store(key, found)
            extracted += 1
        by_kind[kind][path] = found
        if done % 100 == 0:
            context.remaining()
        context.progress(done, len(wanted))
    _forget_other_blobs(context.cache, keys)
    context.state.update(files=len(wanted), extracted=extracted)
    join = reports.Join(
        checkout=context.path,
        python=by_kind["python"],
        templates=by_kind["template"],
        configuration=by_kind["configuration"],
    )
    found = [
        *reports.unparsable(join),
        *reports.unused_definitions(join),
        *reports.unimported_modules(join),
        *reports.unreversed_url_names(join),
        *reports.unrendered_templates(join),
        *reports.unrun_tools_and_commands(join, context.files),
    ]
    return distinct(found)


def extract(path: Path, kind: str) -> facts.Facts:
    """The facts of one file of the checkout."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return {"error": "larger than 1 MB"} if kind == "python" else {}
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return {"error": f"cannot be read: {error.strerror}"} if kind == "python" else {}
    if kind == "python":
        return facts.extract_python(text)
    if kind == "template":
        return facts.extract_template(text)
    return facts.extract_configuration(text)


def _forget_other_blobs(cache: Path, keys: set[str]) -> None:
    """Facts of blobs this commit no longer has: the cache holds one commit's worth."""
    if not cache.is_dir():
        return
    for stored in cache.glob("facts-*.json"):
        if stored.stem not in keys:
            stored.unlink(missing_ok=True)
