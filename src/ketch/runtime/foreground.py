"""``ketch-runc run``: create, start and wait for a container in the foreground.

The calling process becomes a child subreaper, so that it reaps the container's init and
any orphan the container leaves, and collects the exit status. When the config sets
process.terminal, it receives the container's pty over a console socket of its own and
copies between the pty and its own stdin and stdout (see :mod:`ketch.runtime.console`).
Signals it receives (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH) are
forwarded to the init, as runc forwards them. With a terminal, SIGWINCH resizes the pty
instead. This changes the process's signal handlers, so it is for a command line, not
for a library caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any

from ketch.errors import KetchError
from ketch.linux import syscalls
from ketch.runtime import console

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


def run_foreground(
    runtime: Any,
    container_id: str,
    bundle: Path,
    pid_file: Path | None,
    *,
    preserve_fds: int = 0,
    no_pivot: bool = False,
) -> int:
    """Run the container to its end, delete it, and return its exit status
    (128 + the signal number when a signal ended it)."""
    syscalls.set_child_subreaper()
    if not _wants_terminal(bundle):
        pid = runtime.create(
            container_id, bundle, pid_file=pid_file, preserve_fds=preserve_fds, no_pivot=no_pivot
        )
        return _start_and_wait(runtime, container_id, pid, master=None)
    with tempfile.TemporaryDirectory(prefix="ketch-runc-console-") as directory:
        socket_path = Path(directory) / "console.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(socket_path))
            listener.listen(1)
            pid = runtime.create(
                container_id,
                bundle,
                pid_file=pid_file,
                console_socket=socket_path,
                preserve_fds=preserve_fds,
                no_pivot=no_pivot,
            )
            try:
                master = console.receive_master(listener)
            except BaseException:
                runtime.delete(container_id, force=True)
                raise
    try:
        return _start_and_wait(runtime, container_id, pid, master)
    finally:
        os.close(master)


def _start_and_wait(runtime: Any, container_id: str, pid: int, master: int | None) -> int:
    try:
        _forward_signals(runtime, container_id)
        runtime.start(container_id)
        if master is not None:
            console.proxy_terminal(master)
        return _wait_for(pid)
    finally:
        for number in FORWARDED_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        try:
            runtime.delete(container_id, force=True)
        except KetchError as error:
            log.warning("cannot delete container %s after it ran: %s", container_id, error)


def _wants_terminal(bundle: Path) -> bool:
    try:
        config = json.loads((bundle / "config.json").read_text())
        return config["process"]["terminal"] is True
    except (OSError, ValueError, KeyError, TypeError):
        return False  # create reports what is wrong with the bundle


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


def exec_foreground(
    runtime: Any,
    container_id: str,
    process: dict[str, Any],
    *,
    pid_file: Path | None,
    preserve_fds: int,
) -> int:
    """Run ``process`` in the container to its end and return its exit status.

    Signals this process receives are forwarded to the exec'd process, and with
    process.terminal its pty is copied to and from this process's stdin and stdout.
    """
    if not process.get("terminal"):
        pid = runtime.exec(container_id, process, pid_file=pid_file, preserve_fds=preserve_fds)
        return _wait_forwarding(pid, master=None)
    with tempfile.TemporaryDirectory(prefix="ketch-runc-console-") as directory:
        socket_path = Path(directory) / "console.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(socket_path))
            listener.listen(1)
            pid = runtime.exec(
                container_id,
                process,
                pid_file=pid_file,
                console_socket=socket_path,
                preserve_fds=preserve_fds,
            )
            try:
                master = console.receive_master(listener)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise
    try:
        return _wait_forwarding(pid, master)
    finally:
        os.close(master)


def _wait_forwarding(pid: int, master: int | None) -> int:
    def forward(number: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)

    for number in FORWARDED_SIGNALS:
        if not (master is not None and number == signal.SIGWINCH):
            signal.signal(number, forward)
    try:
        if master is not None:
            console.proxy_terminal(master)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
            except InterruptedError:
                continue
            return _exit_status(status)
    finally:
        for number in FORWARDED_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
