"""The embedded default generates its secret key and encryption key into VAR_DIR on
first start. Processes that start at once (a server and a test run, web and worker)
must end with the same keys, each whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

READ_KEYS = (
    "from controlplane import settings; print(settings.ENCRYPTION_KEYS[0], settings.SECRET_KEY)"
)


def test_processes_starting_at_once_share_one_whole_generated_key(tmp_path: Path) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"ENCRYPTION_KEYS", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
    } | {"VAR_DIR": str(tmp_path)}
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", READ_KEYS],
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    printed = {start.communicate()[0].strip() for start in starts}

    assert all(start.returncode == 0 for start in starts)
    assert len(printed) == 1
    encryption_key, secret_key = printed.pop().split(" ")
    Fernet(encryption_key.encode())  # a whole key, not a half-written file
    assert len(secret_key) >= 50
    assert (tmp_path / "encryption_key").read_text().strip() == encryption_key
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]
