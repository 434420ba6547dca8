"""Settings as a fresh process reads them from its environment: a settings module is
read once per process, so a setting that follows another variable is checked in a
child process given that environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from django.conf import settings

# The variables these checks set or expect unset; the rest of the environment (a CI
# run's DATABASE_URL) is passed on.
CONTROLLED = ("HOST", "PORT", "SITE_URL", "EMAIL_URL", "OFFLINE_TOKEN_DELAY_SECONDS")

READ = """
import importlib, json, logging, sys
logging.basicConfig(level=logging.DEBUG)
module = importlib.import_module(sys.argv[1])
print(json.dumps({name: getattr(module, name) for name in sys.argv[2:]}, default=str))
"""


def settings_process(module: str, *names: str, **environment: str) -> tuple[dict[str, Any], str]:
    """The settings `names` of `module` read in a new process with `environment`, and
    what the process logged."""
    child = {key: value for key, value in os.environ.items() if key not in CONTROLLED}
    with tempfile.TemporaryDirectory() as var_dir:
        child.update(environment, VAR_DIR=var_dir)
        done = subprocess.run(
            [sys.executable, "-c", READ, module, *names],
            capture_output=True,
            text=True,
            env=child,
            cwd=settings.BASE_DIR,
            check=True,
        )
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def settings_of(module: str, name: str, **environment: str) -> Any:
    return settings_process(module, name, **environment)[0][name]
