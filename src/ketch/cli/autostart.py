"""Start ketchd in the background when nothing responds on the default socket.

The CLI calls ``start_daemon`` only for the default host and only as root, because
ketchd needs root and a user who named a host meant that daemon. ketchd runs in a new
session (a Ctrl-C in the terminal does not reach it) with its output appended to
``/var/log/ketchd.log``. ``start_daemon`` returns once ``/_ping`` responds, within
``READY_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import os
import sys
import time

LOG_PATH = "/var/log/ketchd.log"
READY_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05


def daemon_command() -> list[str]:
    """Return the command that runs ketchd with the interpreter running this CLI.

    The ``ketchd`` script beside the interpreter (a venv's bin directory) is preferred,
    so that ketchd's process name and usage messages read "ketchd".
    """
    script = os.path.join(os.path.dirname(sys.executable), "ketchd")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "ketch.ketchd"]


def start_daemon(
    socket_path: str,
    command: list[str] | None = None,
    log_path: str = LOG_PATH,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> int:
    """Start ketchd, wait until it responds on ``socket_path`` and return its PID.

    Raises DaemonUnreachable when ketchd exits or does not respond in time, with a
    message that names the log file.
    """
    import subprocess

    from ketch.cli.errors import DaemonUnreachable

    command = command or daemon_command()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    print(f"ketch: started ketchd (pid {process.pid}); its log is {log_path}", file=sys.stderr)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = process.poll()
        if status is not None:
            raise DaemonUnreachable(
                f"ketchd exited with status {status} while starting; see {log_path}"
            )
        if _answers_ping(socket_path):
            return process.pid
        time.sleep(POLL_SECONDS)
    raise DaemonUnreachable(
        f"ketchd (pid {process.pid}) did not respond on {socket_path} within {timeout:g} s; "
        f"see {log_path}"
    )


def _answers_ping(socket_path: str) -> bool:
    from ketch.cli.client import Client
    from ketch.cli.errors import ApiError, DaemonUnreachable, ProtocolFailure

    try:
        Client(f"unix://{socket_path}").open("HEAD", "/_ping").close()
    except (DaemonUnreachable, ProtocolFailure, ApiError):
        return False
    return True
