"""Restarting the ketchd of a support.daemon fixture on the same roots, with extra flags."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from support.daemon import VENV_BIN, KetchDaemon


def restart_ketchd(
    daemon: KetchDaemon,
    *extra_args: str,
    kill_signal: int = signal.SIGKILL,
    while_down: float = 0.0,
) -> None:
    """Stop ketchd with ``kill_signal``, wait ``while_down`` s, start it again, and wait
    until its unix socket serves."""
    os.kill(daemon.process.pid, kill_signal)
    daemon.process.wait(timeout=15)
    time.sleep(while_down)
    command = [
        str(VENV_BIN / "ketchd"),
        "--data-root", str(daemon.data_root),
        "--exec-root", str(daemon.exec_root),
        "--host", daemon.host,
        "--config-file", str(daemon.root / "daemon.json"),
        *extra_args,
    ]  # fmt: skip
    with open(daemon.log_path, "ab") as log:
        daemon.process = subprocess.Popen(daemon.namespace.command(command), stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise AssertionError(f"ketchd exited:\n{daemon.log_text()[-2000:]}")
        if daemon.docker("version").returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"ketchd did not come back:\n{daemon.log_text()[-2000:]}")
