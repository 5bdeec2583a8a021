"""The supervisor process: one event loop that creates, watches and reaps every container.

On-disk layout under the exec root::

    <exec_root>/
        supervisor.sock     the protocol socket (mode 0600), see ketch.supervisor.protocol
        supervisor.pid      this process's pid, locked with flock while it runs
        supervisor.log      its own log, written when ensure_supervisor starts it
        supervisor/<id>.json  container records, see ketch.supervisor.records
        runtime/<id>/       the OCI runtime's state (Runtime's state root)

The process is a child subreaper, so every container init becomes its child and only it
collects their exit statuses. It stays single-threaded because ``Runtime.create`` forks
from it. SIGCHLD, SIGTERM and SIGINT only wake the loop through ``signal.set_wakeup_fd``,
and the loop then reaps with ``waitpid(-1, WNOHANG)``. ``Runtime.create`` reaps its own
intermediate child before it returns, and nothing else runs between the loop's calls, so
the loop never takes an exit status the runtime waits for.

SIGTERM or SIGINT stops the supervisor and its containers. Each running init gets SIGTERM,
and SIGKILL after the shutdown timeout or a second signal. A created one gets SIGKILL at
once. Once their exits are recorded, their runtime state and cgroups are deleted. The
records stay, so a later supervisor still reports the exit codes.

The protocol's ops are in :mod:`ketch.supervisor.operations`, and the runtime calls the
supervisor makes are the Protocol in :mod:`ketch.supervisor.runtime_interface`.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from ketch.errors import KetchError, NotFound, SystemFailure
from ketch.linux import syscalls
from ketch.supervisor import operations, process, protocol
from ketch.supervisor.connection import Connection
from ketch.supervisor.container import Container
from ketch.supervisor.eventloop import EventLoop
from ketch.supervisor.execs import ExecProcesses, create_init
from ketch.supervisor.logs import format_timestamp
from ketch.supervisor.operations import exit_fields
from ketch.supervisor.plainlog import get_logger
from ketch.supervisor.records import CREATED, STOPPED, ContainerRecord, RecordStore
from ketch.supervisor.stdio import ContainerStdio, LogRotation

# False at run time, so that the supervisor process does not import typing (see
# ketch.supervisor.records). Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.supervisor.runtime_interface import Runtime

log = get_logger(__name__)

PID_FILE_NAME = "supervisor.pid"
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 5.0

# The exit code recorded for a container whose real exit status was lost because the
# supervisor that ran it ended without stopping it.
LOST_EXIT_CODE = 255


class Supervisor:
    """Serves the protocol and owns every container it created."""

    def __init__(
        self,
        exec_root: Path,
        runtime: Runtime | None = None,
        *,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
    ) -> None:
        self.exec_root = exec_root
        self.socket_path = exec_root / protocol.SOCKET_NAME
        self.pid_path = exec_root / PID_FILE_NAME
        if runtime is None:
            from ketch.runtime import Runtime as OciRuntime

            runtime = OciRuntime(exec_root / "runtime")
        self.runtime = runtime
        self.shutdown_timeout = shutdown_timeout
        self.loop = EventLoop()
        self.containers: dict[str, Container] = {}
        self._containers_by_pid: dict[int, Container] = {}
        self.subscribers: list[Connection] = []
        self.execs = ExecProcesses(
            self.loop, self.runtime, exec_root, self._containers_by_pid.__setitem__, self._publish
        )
        self._records: RecordStore | None = None
        self._listener: process.Listener | None = None
        self._wakeup: process.WakeupPipe | None = None
        self._pid_fd = -1
        self._stop_signals = 0
        self._stop_signals_handled = 0
        self._shutting_down = False
        self._shutdown_deadline = 0.0

    # Start-up and the main loop.

    def start(self) -> None:
        """Take the exec root, restore records and listen; raise Conflict if another runs."""
        self.exec_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self._pid_fd = process.lock_pid_file(self.pid_path)
        syscalls.set_child_subreaper()
        process.raise_open_file_limit()
        self._install_signal_handlers()
        self._records = RecordStore(self.exec_root / "supervisor")
        self._restore_records()
        self._listen()
        log.info("supervisor %d serving %s", os.getpid(), self.socket_path)

    def run(self) -> None:
        """Serve until a stop signal, then stop the containers and clean up."""
        try:
            while not self._shutdown_complete():
                self.loop.run_once(max_wait=1.0 if self._shutting_down else None)
                self._handle_stop_signals()
        finally:
            self._close()
        log.info("supervisor %d stopped", os.getpid())

    def _install_signal_handlers(self) -> None:
        self._wakeup = process.WakeupPipe(self._reap_children)
        self.loop.register(self._wakeup.read_fd, self._wakeup)
        signal.set_wakeup_fd(self._wakeup.write_fd, warn_on_full_buffer=False)
        # The handlers only count, because a byte in the wakeup pipe does not prove that
        # this process got a signal: a process forked by Runtime.create shares the pipe
        # until the runtime resets its signal handling.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, self._count_stop_signal)
        signal.signal(signal.SIGINT, self._count_stop_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _count_stop_signal(self, signum: int, frame: object) -> None:
        self._stop_signals += 1

    def _listen(self) -> None:
        sock = process.listen_unix(self.socket_path)
        self._listener = process.Listener(sock, self._accept_client)
        self.loop.register(sock.fileno(), self._listener)

    def _accept_client(self, client: socket.socket) -> None:
        Connection(self.loop, client, self.handle_request)

    # Requests.

    def handle_request(self, connection: Connection, request: dict[str, Any]) -> None:
        """Run one request and send its response, unless the operation responds later itself."""
        operations.handle_request(self, connection, request)

    @property
    def shutting_down(self) -> bool:
        """Whether a stop signal has come, so that no container may be created."""
        return self._shutting_down

    # Containers.

    def create_container(
        self,
        container_id: str,
        bundle: Path,
        log_path: Path,
        open_stdin: bool,
        rotation: LogRotation,
        terminal: bool = False,
    ) -> Container:
        stdio = ContainerStdio.open(container_id, log_path, open_stdin, rotation, terminal)
        try:
            pid = create_init(self.runtime, self.exec_root, container_id, bundle, stdio, open_stdin)
        except BaseException:
            stdio.abandon()
            raise
        finally:
            stdio.close_child_fds()
            # glibc keeps the pages that the runtime's create freed resident until
            # malloc_trim returns them (about 1 MiB after a seccomp compile).
            process.release_free_heap()
        record = ContainerRecord(
            container_id,
            str(bundle),
            str(log_path),
            pid,
            created_at=format_timestamp(time.time_ns()),
        )
        container = Container(
            self.loop,
            record,
            log_file=stdio.log_file,
            output_fds=stdio.output_fds(),
            stdin_fd=stdio.stdin_write_fd,
            on_finished=self._container_finished,
            console_fd=stdio.console_fd,
        )
        self.containers[container_id] = container
        self._containers_by_pid[pid] = container
        self.save_record(record)
        log.info("container %s created, init pid %d", container_id, pid)
        return container

    def _reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            container = self._containers_by_pid.pop(pid, None)
            if container is None:
                log.debug("reaped process %d, which is no container's init", pid)
                continue
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code < 0:
                exit_code = 128 - exit_code
            log.debug("container %s: init %d exited with %d", container.id, pid, exit_code)
            container.process_exited(exit_code, time.time_ns())

    def _container_finished(self, container: Container) -> None:
        """Record the exit and tell waiters, subscribers and pending deletes, in that order."""
        record = container.record
        record.status = STOPPED
        record.exit_code = container.exit_code
        record.finished_at = format_timestamp(container.exit_time_ns)
        self.save_record(record)
        log.info("container %s exited with code %s", record.id, record.exit_code)
        for waiter in list(container.waiters):
            container.waiters.remove(waiter)
            waiter.send_message({"ok": True, **exit_fields(record)})
            waiter.resume_requests()
        self._publish({"type": "exit", "id": record.id, **exit_fields(record)})
        if container.delete_requests:
            self._complete_deletes(container)

    def _complete_deletes(self, container: Container) -> None:
        requests = list(container.delete_requests)
        container.delete_requests.clear()
        try:
            self.remove(container)
        except KetchError as error:
            for connection in requests:
                connection.send_error(error)
                connection.resume_requests()
            return
        for connection in requests:
            connection.send_message({"ok": True})
            connection.resume_requests()

    def remove(self, container: Container) -> None:
        """Delete the runtime state and cgroups of a finished container and forget it."""
        try:
            self.runtime.delete(container.id)
        except NotFound:
            # A restored record may outlive its runtime state; the goal is reached.
            pass
        except OSError as error:
            raise SystemFailure(f"cannot delete container {container.id}: {error}") from None
        container.close()
        del self.containers[container.id]
        self.execs.forget_container(container.id)
        assert self._records is not None
        self._records.remove(container.id)
        log.info("container %s deleted", container.id)

    def _publish(self, event: dict[str, Any]) -> None:
        line = protocol.encode_message(event)
        for subscriber in list(self.subscribers):
            if not subscriber.send(line):
                log.warning("dropping %s: it fell too far behind", subscriber.label)
                subscriber.close()

    def save_record(self, record: ContainerRecord) -> None:
        assert self._records is not None
        try:
            self._records.save(record)
        except OSError as error:
            log.error("cannot write the record of container %s: %s", record.id, error)

    def kill_quietly(self, container: Container, signal_number: int) -> None:
        """Signal a container's init that is not reaped yet, logging instead of raising."""
        try:
            self.runtime.kill(container.id, signal_number)
            return
        except (KetchError, OSError) as error:
            log.warning(
                "cannot send signal %d to container %s through the runtime: %s; "
                "signalling init %d directly",
                signal_number,
                container.id,
                error,
                container.record.pid,
            )
        # The init is this process's child and not reaped yet, so its pid cannot have
        # been reused by another process.
        try:
            os.kill(container.record.pid, signal_number)
        except ProcessLookupError:
            pass

    def _restore_records(self) -> None:
        assert self._records is not None
        for record in self._records.load_all():
            if record.status != STOPPED:
                self._record_lost_exit(record)
            container = Container(
                self.loop,
                record,
                log_file=None,
                output_fds={},
                stdin_fd=None,
                on_finished=self._container_finished,
            )
            self.containers[record.id] = container
        if self.containers:
            log.info(
                "restored %d stopped containers from %s",
                len(self.containers),
                self._records.directory,
            )

    def _record_lost_exit(self, record: ContainerRecord) -> None:
        """Stop a container that an earlier supervisor left behind, and record exit 255."""
        # Limitation: no live restore yet; the old supervisor's pipes are gone, so such a
        # container is killed rather than adopted.
        log.warning(
            "container %s was left %s by a supervisor that did not stop it; deleting it and "
            "recording exit code %d because its exit status is lost",
            record.id,
            record.status,
            LOST_EXIT_CODE,
        )
        try:
            self.runtime.delete(record.id, force=True)
        except NotFound:
            pass
        except (KetchError, OSError) as error:
            log.error("cannot delete container %s: %s", record.id, error)
        record.status = STOPPED
        record.exit_code = LOST_EXIT_CODE
        record.finished_at = format_timestamp(time.time_ns())
        self.save_record(record)

    # Shutdown.

    def _handle_stop_signals(self) -> None:
        if self._stop_signals == self._stop_signals_handled:
            return
        self._stop_signals_handled = self._stop_signals
        if self._shutting_down:
            log.info("second stop signal: killing the remaining containers")
            self._kill_remaining()
            return
        self._begin_shutdown()

    def _begin_shutdown(self) -> None:
        self._shutting_down = True
        live = [c for c in self.containers.values() if not c.exited and not c.finished]
        log.info("stop signal: stopping %d containers", len(live))
        self._stop_listening()
        for container in live:
            # A created container's process has not run yet, so there is nothing to
            # shut down cleanly.
            first = signal.SIGKILL if container.record.status == CREATED else signal.SIGTERM
            self.kill_quietly(container, first)
        self.loop.call_later(self.shutdown_timeout, self._kill_remaining)
        self._shutdown_deadline = time.monotonic() + self.shutdown_timeout + 30.0

    def _kill_remaining(self) -> None:
        for container in self.containers.values():
            if not container.exited and not container.finished:
                self.kill_quietly(container, signal.SIGKILL)

    def _shutdown_complete(self) -> bool:
        if not self._shutting_down:
            return False
        if all(c.finished for c in self.containers.values()):
            return True
        if time.monotonic() > self._shutdown_deadline:
            unfinished = sorted(c.id for c in self.containers.values() if not c.finished)
            log.error("giving up on containers that did not finish: %s", ", ".join(unfinished))
            return True
        return False

    def _stop_listening(self) -> None:
        if self._listener is None:
            return
        self.loop.unregister(self._listener.sock.fileno())
        self._listener.sock.close()
        self._listener = None
        self.socket_path.unlink(missing_ok=True)

    def _close(self) -> None:
        self._stop_listening()
        for container in list(self.containers.values()):
            if container.finished:
                self._delete_runtime_state(container)
            container.close()
        self.execs.close_all()
        for subscriber in list(self.subscribers):
            subscriber.close()
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
        self.loop.close()
        if self._pid_fd >= 0:
            self.pid_path.unlink(missing_ok=True)
            os.close(self._pid_fd)
            self._pid_fd = -1

    def _delete_runtime_state(self, container: Container) -> None:
        try:
            self.runtime.delete(container.id)
        except NotFound:
            pass
        except (KetchError, OSError) as error:
            log.error("cannot delete runtime state of container %s: %s", container.id, error)
