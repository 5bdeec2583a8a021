"""Processes exec'd into running containers, and the console sockets of terminals.

An exec is started by the ``exec`` op. Its process joins a running container through
``Runtime.exec`` and is watched like a container's init: the supervisor is its parent
(``Runtime.exec`` leaves it as the caller's child), keeps its stdio pipes, reaps it and
reports its exit. Unlike an init it has no log and no record on disk, and the connection that
started it is its only attach client. That client gets a ``STREAM_EXIT`` frame with the
exit code just before its stream ends, so the engine knows the code as soon as the
output is over. The exit is also published as ``{"type": "exec_exit", "id", "exec_id",
"exit_code"}`` to event subscribers.

The supervisor remembers the exit codes of finished execs in memory, up to
``MAX_FINISHED_EXECS`` per container and until their container is deleted, so that an
engine restarted while an exec ended can ask for its code (the ``execs`` op). A restart
of the supervisor itself loses them, as it kills every container and its execs.

A process with a terminal (an exec or a container's init) gets its pty through runc's
console socket protocol (see :mod:`ketch.runtime.console`). The socket is made for the one
process and removed once its pty master has arrived::

    <exec_root>/console/<id>.sock
"""

from __future__ import annotations

import collections
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from ketch.errors import Conflict, InvalidArgument, KetchError, SystemFailure
from ketch.supervisor.container import Container
from ketch.supervisor.eventloop import EventLoop
from ketch.supervisor.plainlog import get_logger
from ketch.supervisor.records import RUNNING, STOPPED, ContainerRecord
from ketch.supervisor.stdio import ContainerStdio

# False at run time, so that the supervisor process does not import typing (see
# ketch.supervisor.records). Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

# How long the supervisor waits for a pty master after the runtime returned. The process
# sends it before it execs, so it is normally waiting already.
CONSOLE_TIMEOUT_SECONDS = 10.0

# Finished execs whose exit codes are kept per container; the oldest is forgotten first.
# Healthchecks run an exec per probe, so the table must not grow with a container's
# lifetime, and a count per container keeps one container's probes from evicting the
# codes of another's. The engine needs a code from here only for an exec that ended while
# no ketchd received its exit. ketchd starts no exec while it is down, so the count that
# matters is the number of execs running in one container when ketchd stopped.
# NOTE: with more than this many execs ending in one container before the restarted
# ketchd requests their codes, the oldest codes are lost and the engine records those
# execs without one.
MAX_FINISHED_EXECS = 256


class ConsoleSocket:
    """A listening console socket for one process, removed on close."""

    def __init__(self, exec_root: Path, name: str) -> None:
        directory = exec_root / "console"
        directory.mkdir(mode=0o700, exist_ok=True)
        self.path = directory / f"{name}.sock"
        self.path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(str(self.path))
            self.sock.listen(1)
        except OSError:
            self.close()
            raise

    def receive_master(self) -> int:
        """Return the pty master the process sent; raise SystemFailure if none came."""
        from ketch.runtime import console

        self.sock.settimeout(CONSOLE_TIMEOUT_SECONDS)
        try:
            return console.receive_master(self.sock)
        except TimeoutError:
            raise SystemFailure(
                f"no terminal arrived on console socket {self.path} within "
                f"{CONSOLE_TIMEOUT_SECONDS:g} s"
            ) from None

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def create_init(
    runtime: Any,
    exec_root: Path,
    container_id: str,
    bundle: Path,
    stdio: ContainerStdio,
    open_stdin: bool,
) -> int:
    """Create a container's init through the runtime and return its pid; with a terminal,
    receive its pty master into ``stdio``. Raises SystemFailure for an OSError."""
    console_socket = ConsoleSocket(exec_root, container_id) if stdio.terminal else None
    try:
        try:
            pid = runtime.create(
                container_id,
                bundle,
                stdio=stdio.child_fds(),
                **({"console_socket": console_socket.path} if console_socket else {}),
            )
        except OSError as error:
            raise SystemFailure(f"cannot create container {container_id}: {error}") from None
        if console_socket is not None:
            try:
                stdio.take_console(console_socket.receive_master(), open_stdin)
            except BaseException:
                _delete_quietly(runtime, container_id)
                raise
        return pid
    finally:
        if console_socket is not None:
            console_socket.close()


def _delete_quietly(runtime: Any, container_id: str) -> None:
    try:
        runtime.delete(container_id, force=True)
    except (KetchError, OSError) as error:
        log.error("cannot delete container %s after a failed create: %s", container_id, error)


def set_window_size(process: Container, height: int, width: int) -> None:
    """Resize the terminal of a container or exec; raise InvalidArgument without one."""
    from ketch.runtime import console

    if process.console_fd < 0 or process.output_ended:
        raise InvalidArgument(f"cannot resize {process.id}: it has no terminal")
    console.set_window_size(process.console_fd, height, width)


class ExecProcesses:
    """The running execs by exec id."""

    def __init__(
        self,
        loop: EventLoop,
        runtime: Any,
        exec_root: Path,
        watch_pid: Callable[[int, Container], None],
        publish: Callable[[dict[str, Any]], None],
    ) -> None:
        self._loop = loop
        self._runtime = runtime
        self._exec_root = exec_root
        self._watch_pid = watch_pid
        self._publish = publish
        self._parents: dict[str, str] = {}
        self.processes: dict[str, Container] = {}
        # Exec state objects of finished execs by container id, then by exec id, oldest
        # first.
        self._exit_states: dict[str, collections.OrderedDict[str, dict[str, Any]]] = {}
        # Running execs of deleted containers, whose exits are not remembered, so that an
        # exec reaped after its container's delete leaves no table behind.
        self._orphans: set[str] = set()

    def start(
        self,
        container_id: str,
        exec_id: str,
        process: dict[str, Any],
        *,
        tty: bool,
        open_stdin: bool,
    ) -> Container:
        """Start ``process`` (an OCI process object) in the container and watch it."""
        if exec_id in self.processes:
            raise Conflict(f"exec {exec_id} is already running")
        stdio = ContainerStdio.open(exec_id, None, open_stdin, terminal=tty)
        console_socket = None
        pid = 0
        try:
            if tty:
                console_socket = ConsoleSocket(self._exec_root, exec_id)
            pid = self._runtime.exec(
                container_id,
                process,
                stdio=stdio.child_fds(),
                console_socket=console_socket.path if console_socket else None,
            )
            if console_socket is not None:
                stdio.take_console(console_socket.receive_master(), open_stdin)
        except BaseException as error:
            stdio.abandon()
            if pid:
                # The process runs but its terminal never arrived, so no client could use it.
                os.kill(pid, signal.SIGKILL)
            if isinstance(error, OSError):
                raise SystemFailure(f"cannot exec in container {container_id}: {error}") from None
            raise
        finally:
            stdio.close_child_fds()
            if console_socket is not None:
                console_socket.close()
        return self._watch(container_id, exec_id, pid, stdio)

    def _watch(self, container_id: str, exec_id: str, pid: int, stdio: ContainerStdio) -> Container:
        record = ContainerRecord(exec_id, "", "", pid, status=RUNNING)
        exec_process = Container(
            self._loop,
            record,
            log_file=None,
            output_fds=stdio.output_fds(),
            stdin_fd=stdio.stdin_write_fd,
            on_finished=self._finished,
            console_fd=stdio.console_fd,
            exit_trailer=True,
        )
        self.processes[exec_id] = exec_process
        self._parents[exec_id] = container_id
        self._watch_pid(pid, exec_process)
        log.info("exec %s started in container %s, pid %d", exec_id, container_id, pid)
        return exec_process

    def _finished(self, exec_process: Container) -> None:
        exec_id = exec_process.id
        container_id = self._parents.pop(exec_id, "")
        self.processes.pop(exec_id, None)
        exec_process.close()
        log.info("exec %s exited with code %s", exec_id, exec_process.exit_code)
        self._remember_exit(container_id, exec_id, exec_process)
        self._publish(
            {
                "type": "exec_exit",
                "id": container_id,
                "exec_id": exec_id,
                "exit_code": exec_process.exit_code,
            }
        )

    def _remember_exit(self, container_id: str, exec_id: str, exec_process: Container) -> None:
        if exec_id in self._orphans:
            self._orphans.discard(exec_id)
            return
        state = _exec_state(container_id, exec_id, exec_process.record.pid, STOPPED)
        state["exit_code"] = exec_process.exit_code
        exit_states = self._exit_states.setdefault(container_id, collections.OrderedDict())
        exit_states[exec_id] = state
        while len(exit_states) > MAX_FINISHED_EXECS:
            exit_states.popitem(last=False)

    def states(self, container_id: str) -> list[dict[str, Any]]:
        """Return the state objects of the container's running and remembered execs."""
        states = [
            _exec_state(container_id, exec_id, process.record.pid, RUNNING)
            for exec_id, process in self.processes.items()
            if self._parents.get(exec_id) == container_id
        ]
        states += self._exit_states.get(container_id, {}).values()
        return states

    def forget_container(self, container_id: str) -> None:
        """Drop the remembered exits of a deleted container's execs, and remember none of
        the execs of it that still run."""
        self._exit_states.pop(container_id, None)
        for exec_id, parent_id in self._parents.items():
            if parent_id == container_id:
                self._orphans.add(exec_id)

    def close_all(self) -> None:
        for exec_process in list(self.processes.values()):
            exec_process.close()
        self.processes.clear()


def _exec_state(container_id: str, exec_id: str, pid: int, status: str) -> dict[str, Any]:
    return {"id": container_id, "exec_id": exec_id, "pid": pid, "status": status, "exit_code": None}
