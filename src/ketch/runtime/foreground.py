"""``ketch-runc run``: create, start and wait for a container in the foreground.

The calling process becomes a child subreaper, so the container's init is re-parented to
it and it can collect the exit status. Signals it receives (SIGINT, SIGTERM, SIGHUP,
SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH) are forwarded to the init, as runc forwards them.
This changes the process's signal handlers, so it is for a command line, not for a
library caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from ketch.errors import KetchError
from ketch.linux import syscalls

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)


def run_foreground(runtime: Any, container_id: str, bundle: Path, pid_file: Path | None) -> int:
    """Run the container to its end, delete it, and return its exit status
    (128 + the signal number when a signal ended it)."""
    syscalls.set_child_subreaper()
    pid = runtime.create(container_id, bundle, pid_file=pid_file)
    try:
        _forward_signals(runtime, container_id)
        runtime.start(container_id)
        return _wait_for(pid)
    finally:
        for number in FORWARDED_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        try:
            runtime.delete(container_id, force=True)
        except KetchError as error:
            log.warning("cannot delete container %s after it ran: %s", container_id, error)


def _forward_signals(runtime: Any, container_id: str) -> None:
    def forward(number: int, _frame: object) -> None:
        with contextlib.suppress(KetchError):
            runtime.kill(container_id, number)

    for number in FORWARDED_SIGNALS:
        signal.signal(number, forward)


def _wait_for(pid: int) -> int:
    """Reap children until ``pid`` exits; orphans of the container are reaped too."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if reaped == pid:
            return _exit_status(status)


def _exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
