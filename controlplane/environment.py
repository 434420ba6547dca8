"""Where the settings read from: the project's directory, the environment (with a
`.env` file beside manage.py, when there is one) and VAR_DIR, the embedded mode's
runtime state (SQLite database, generated keys, checkouts)."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
