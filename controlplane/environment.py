"""Where the settings read from: the project's directory, the environment (with a
`.env` file beside manage.py, when there is one) and VAR_DIR, the embedded mode's
runtime state (SQLite database, generated keys, checkouts)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent


def read_env_file(path: Path) -> bool:
    """Read a `.env` file into the environment (what is set there already wins), when
    there is one: the embedded default needs none, and django-environ logs "not found"
    for a missing one, on every start of every process."""
    if not path.is_file():
        return False
    environ.Env.read_env(path)
    return True


env = environ.Env()
read_env_file(BASE_DIR / ".env")

VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

# Addresses that mean "every interface": a server bound there is reached on this
# machine at the loopback address, which is what a link needs to name.
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 (recognised, not bound)


def site_url(host: str, port: int) -> str:
    """The address links in messages (approvals, alerts) point to when SITE_URL is not
    set: where bin/run serves, from its HOST and PORT."""
    host = host.strip()
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            host = f"[{host.strip('[]')}]"
    except ValueError:
        pass  # a name, not an address
    return f"http://{host}:{port}"
