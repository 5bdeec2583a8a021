"""Run the ``ketch`` CLI in a subprocess, as a user would, and capture what it prints."""

from __future__ import annotations

import os
import subprocess
import sys


def run_ketch(
    *args: str,
    host: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ketch.cli.main [-H host] args...`` with KETCH_HOST unset, and
    ``input`` (if given) on its stdin."""
    environment = {key: value for key, value in os.environ.items() if key != "KETCH_HOST"}
    environment.update(env or {})
    command = [sys.executable, "-m", "ketch.cli.main"]
    if host is not None:
        command += ["-H", host]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        input=input,
    )
