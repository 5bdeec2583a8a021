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
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Protocol

from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound, SystemFailure, Unavailable
from ketch.linux import syscalls
from ketch.supervisor import process, protocol
from ketch.supervisor.connection import Connection, Mode
from ketch.supervisor.container import Container
from ketch.supervisor.eventloop import EventLoop
from ketch.supervisor.execs import ExecProcesses, create_init, set_window_size
from ketch.supervisor.logs import format_timestamp
from ketch.supervisor.records import CREATED, RUNNING, STOPPED, ContainerRecord, RecordStore
from ketch.supervisor.stdio import ContainerStdio, LogRotation

log = logging.getLogger(__name__)

PID_FILE_NAME = "supervisor.pid"
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 5.0

# The exit code recorded for a container whose real exit status was lost because the
# supervisor that ran it ended without stopping it.
LOST_EXIT_CODE = 255


class Runtime(Protocol):
    """The part of ketch.runtime.Runtime the supervisor calls."""

    def create(
        self,
        container_id: str,
        bundle: Path,
        *,
        stdio: tuple[int, int, int] | None = None,
        console_socket: Path | None = None,
    ) -> int: ...

    def exec(
        self,
        container_id: str,
        process: dict[str, Any],
        *,
        stdio: tuple[int, int, int] | None = None,
        console_socket: Path | None = None,
    ) -> int: ...

    def start(self, container_id: str) -> None: ...

    def kill(self, container_id: str, signal: int, all: bool = False) -> None: ...

    def delete(self, container_id: str, force: bool = False) -> None: ...

    def pause(self, container_id: str) -> None: ...

    def resume(self, container_id: str) -> None: ...

    def update(self, container_id: str, resources: dict[str, Any]) -> None: ...

    def processes(self, container_id: str) -> list[int]: ...


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
        self._subscribers: list[Connection] = []
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
        op = request["op"]
        try:
            response = getattr(self, f"_op_{op}")(connection, request)
        except KetchError as error:
            level = logging.ERROR if isinstance(error, SystemFailure) else logging.DEBUG
            log.log(level, "request %s %s failed: %s", op, request.get("id", ""), error)
            connection.send_error(error)
            return
        except Exception as error:
            log.exception("request %s failed", op)
            connection.send_error(SystemFailure(f"supervisor failed on {op}: {error!r}"))
            return
        if response is not None:
            connection.send_message({"ok": True, **response})

    def _op_ping(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "protocol": protocol.PROTOCOL_VERSION}

    def _op_create(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        container_id = protocol.require_container_id(request)
        bundle = Path(protocol.require_absolute_path(request, "bundle"))
        log_path = Path(protocol.require_absolute_path(request, "log_path"))
        open_stdin = protocol.optional_bool(request, "open_stdin", False)
        terminal = protocol.optional_bool(request, "tty", False)
        rotation = LogRotation(
            protocol.optional_int(request, "log_max_size", 0, 0),
            protocol.optional_int(request, "log_max_files", 1, 1),
        )
        if self._shutting_down:
            raise Unavailable("the supervisor is shutting down and creates no containers")
        if container_id in self.containers:
            raise Conflict(f"container {container_id} already exists")
        container = self._create_container(
            container_id, bundle, log_path, open_stdin, rotation, terminal
        )
        return {"pid": container.record.pid}

    def _op_start(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        container = self._get(request)
        if container.record.status != CREATED or container.exited:
            status = STOPPED if container.exited else container.record.status
            raise Conflict(f"container {container.id} is {status}: only a created one can start")
        _call_runtime("start", container.id, lambda: self.runtime.start(container.id))
        container.record.status = RUNNING
        container.record.started_at = format_timestamp(time.time_ns())
        self._save(container.record)
        log.info("container %s started", container.id)
        return {}

    def _op_kill(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        exec_process = self.execs.processes.get(str(request.get("id")))
        if exec_process is not None:
            # An exec that has not finished is an unreaped child, so its pid is still its.
            if not exec_process.exited:
                os.kill(exec_process.record.pid, protocol.require_signal(request))
            return {}
        container = self._get(request)
        signal_number = protocol.require_signal(request)
        # Once reaped, the pid may belong to another process, so the runtime is not asked.
        if container.exited:
            raise Conflict(f"container {container.id} is not running")
        _call_runtime("kill", container.id, lambda: self.runtime.kill(container.id, signal_number))
        return {}

    def _op_pause(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        container = self._get_live(request, "pause")
        _call_runtime("pause", container.id, lambda: self.runtime.pause(container.id))
        log.info("container %s paused", container.id)
        return {}

    def _op_resume(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        container = self._get_live(request, "resume")
        _call_runtime("resume", container.id, lambda: self.runtime.resume(container.id))
        log.info("container %s resumed", container.id)
        return {}

    def _op_update(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        container = self._get_live(request, "update")
        resources = request.get("resources")
        if not isinstance(resources, dict):
            raise InvalidArgument(
                f"invalid resources {resources!r}: expected an OCI linux.resources object"
            )
        _call_runtime("update", container.id, lambda: self.runtime.update(container.id, resources))
        return {}

    def _op_processes(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        container = self._get_live(request, "list the processes of")
        pids = _call_runtime("list", container.id, lambda: self.runtime.processes(container.id))
        return {"pids": list(pids)}

    def _op_exec(self, connection: Connection, request: dict[str, Any]) -> None:
        container = self._get_live(request, "exec in")
        exec_id = protocol.require_container_id({"id": request.get("exec_id")})
        process = request.get("process")
        if not isinstance(process, dict):
            raise InvalidArgument(f"invalid process {process!r}: expected an OCI process object")
        tty = protocol.optional_bool(request, "tty", False)
        open_stdin = protocol.optional_bool(request, "open_stdin", False)
        exec_process = self.execs.start(
            container.id, exec_id, process, tty=tty, open_stdin=open_stdin
        )
        connection.label = f"client fd {connection.fd} of exec {exec_id}"
        connection.send_message({"ok": True, "pid": exec_process.record.pid})
        streams = frozenset({protocol.STREAM_STDOUT, protocol.STREAM_STDERR})
        exec_process.attach(connection, streams, open_stdin)

    def _op_resize(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        target = request.get("id")
        process = self.execs.processes.get(target) if isinstance(target, str) else None
        if process is None:
            process = self._get(request)
        height = protocol.optional_int(request, "height", 0, 1)
        width = protocol.optional_int(request, "width", 0, 1)
        try:
            set_window_size(process, height, width)
        except OSError as error:
            raise SystemFailure(f"cannot resize the terminal of {process.id}: {error}") from None
        return {}

    def _op_execs(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        container_id = protocol.require_container_id(request)
        return {"execs": self.execs.states(container_id)}

    def _get_live(self, request: dict[str, Any], action: str) -> Container:
        """Return a container whose init has not exited; raise Conflict for any other."""
        container = self._get(request)
        if container.exited or container.finished:
            raise Conflict(f"cannot {action} container {container.id}: it is not running")
        return container

    def _op_delete(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any] | None:
        container = self._get(request)
        force = protocol.optional_bool(request, "force", False)
        if container.finished:
            self._remove(container)
            return {}
        if container.record.status == RUNNING and not container.exited and not force:
            raise Conflict(
                f"container {container.id} is running: stop it first or delete it with force"
            )
        if not container.exited:
            self._kill_quietly(container, signal.SIGKILL)
        self._park(connection, container.delete_requests)
        return None

    def _op_state(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        return {"container": self._get(request).record.to_state()}

    def _op_list(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any]:
        return {"containers": [c.record.to_state() for c in self.containers.values()]}

    def _op_wait(self, connection: Connection, request: dict[str, Any]) -> dict[str, Any] | None:
        container = self._get(request)
        if container.finished:
            return _exit_fields(container.record)
        self._park(connection, container.waiters)
        return None

    def _op_attach(self, connection: Connection, request: dict[str, Any]) -> None:
        container = self._get(request)
        streams = frozenset(
            stream
            for stream, field in (
                (protocol.STREAM_STDOUT, "stdout"),
                (protocol.STREAM_STDERR, "stderr"),
            )
            if protocol.optional_bool(request, field, True)
        )
        stdin = protocol.optional_bool(request, "stdin", False)
        if stdin and container.stdin is None and not container.exited:
            raise InvalidArgument(
                f"cannot attach stdin of container {container.id}: "
                "it was created without open_stdin"
            )
        close_stdin = protocol.optional_bool(request, "close_stdin", True)
        connection.label = f"client fd {connection.fd} of container {container.id}"
        connection.send_message({"ok": True})
        container.attach(connection, streams, stdin, close_stdin)

    def _op_events(self, connection: Connection, request: dict[str, Any]) -> None:
        connection.mode = Mode.EVENTS
        connection.label = f"event subscriber fd {connection.fd}"
        connection.send_message({"ok": True})
        self._subscribers.append(connection)
        connection.add_close_callback(self._subscribers.remove)

    def _get(self, request: dict[str, Any]) -> Container:
        container_id = protocol.require_container_id(request)
        container = self.containers.get(container_id)
        if container is None:
            raise NotFound(f"No such container: {container_id}")
        return container

    def _park(self, connection: Connection, queue: list[Connection]) -> None:
        """Hold ``connection`` in ``queue`` until the container finishes."""
        connection.mode = Mode.PARKED
        queue.append(connection)
        connection.add_close_callback(lambda closed: closed in queue and queue.remove(closed))

    # Containers.

    def _create_container(
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
        self._save(record)
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
        self._save(record)
        log.info("container %s exited with code %s", record.id, record.exit_code)
        for waiter in list(container.waiters):
            container.waiters.remove(waiter)
            waiter.send_message({"ok": True, **_exit_fields(record)})
            waiter.resume_requests()
        self._publish({"type": "exit", "id": record.id, **_exit_fields(record)})
        if container.delete_requests:
            self._complete_deletes(container)

    def _complete_deletes(self, container: Container) -> None:
        requests = list(container.delete_requests)
        container.delete_requests.clear()
        try:
            self._remove(container)
        except KetchError as error:
            for connection in requests:
                connection.send_error(error)
                connection.resume_requests()
            return
        for connection in requests:
            connection.send_message({"ok": True})
            connection.resume_requests()

    def _remove(self, container: Container) -> None:
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
        for subscriber in list(self._subscribers):
            if not subscriber.send(line):
                log.warning("dropping %s: it fell too far behind", subscriber.label)
                subscriber.close()

    def _save(self, record: ContainerRecord) -> None:
        assert self._records is not None
        try:
            self._records.save(record)
        except OSError as error:
            log.error("cannot write the record of container %s: %s", record.id, error)

    def _kill_quietly(self, container: Container, signal_number: int) -> None:
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
        self._save(record)

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
            self._kill_quietly(container, first)
        self.loop.call_later(self.shutdown_timeout, self._kill_remaining)
        self._shutdown_deadline = time.monotonic() + self.shutdown_timeout + 30.0

    def _kill_remaining(self) -> None:
        for container in self.containers.values():
            if not container.exited and not container.finished:
                self._kill_quietly(container, signal.SIGKILL)

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
        for subscriber in list(self._subscribers):
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


def _exit_fields(record: ContainerRecord) -> dict[str, Any]:
    return {"exit_code": record.exit_code, "finished_at": record.finished_at}


def _call_runtime(action: str, container_id: str, call: Any) -> Any:
    """Run a runtime call, turning an OSError into SystemFailure naming the container."""
    try:
        return call()
    except OSError as error:
        raise SystemFailure(f"cannot {action} container {container_id}: {error}") from None
