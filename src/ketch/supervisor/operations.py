"""The protocol's operations, one function per op (see :mod:`ketch.supervisor.protocol`).

Each ``_op_*`` function runs its op on the :class:`~ketch.supervisor.server.Supervisor`
and returns the response fields. It returns None when the op responds later itself
(``wait`` and ``delete`` park the connection until the container finishes) or turns the
connection into a stream (``attach``, ``exec``, ``events``). ``handle_request`` is the
one place that turns an error into an error response.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound, SystemFailure, Unavailable
from ketch.supervisor import protocol
from ketch.supervisor.connection import Connection, Mode
from ketch.supervisor.container import Container
from ketch.supervisor.execs import set_window_size
from ketch.supervisor.logs import format_timestamp
from ketch.supervisor.plainlog import DEBUG, ERROR, get_logger
from ketch.supervisor.records import CREATED, RUNNING, STOPPED, ContainerRecord
from ketch.supervisor.runtime_interface import call_runtime
from ketch.supervisor.stdio import LogRotation

# False at run time, so that the supervisor process does not import typing (see
# ketch.supervisor.records). Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.supervisor.server import Supervisor

    Operation = Callable[[Supervisor, Connection, dict[str, Any]], dict[str, Any] | None]

log = get_logger(__name__)


def handle_request(supervisor: Supervisor, connection: Connection, request: dict[str, Any]) -> None:
    """Run one request and send its response, unless the operation responds later itself."""
    op = request["op"]
    try:
        response = OPERATIONS[op](supervisor, connection, request)
    except KetchError as error:
        level = ERROR if isinstance(error, SystemFailure) else DEBUG
        log.log(level, "request %s %s failed: %s", op, request.get("id", ""), error)
        connection.send_error(error)
        return
    except Exception as error:
        log.exception("request %s %s failed", op, request.get("id", ""))
        connection.send_error(SystemFailure(f"supervisor failed on {op}: {error!r}"))
        return
    if response is not None:
        connection.send_message({"ok": True, **response})


def _op_ping(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    return {"pid": os.getpid(), "protocol": protocol.PROTOCOL_VERSION}


def _op_create(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    container_id = protocol.require_container_id(request)
    bundle = Path(protocol.require_absolute_path(request, "bundle"))
    log_path = Path(protocol.require_absolute_path(request, "log_path"))
    open_stdin = protocol.optional_bool(request, "open_stdin", False)
    terminal = protocol.optional_bool(request, "tty", False)
    rotation = LogRotation(
        protocol.optional_int(request, "log_max_size", 0, 0),
        protocol.optional_int(request, "log_max_files", 1, 1),
    )
    if supervisor.shutting_down:
        raise Unavailable("the supervisor is shutting down and creates no containers")
    if container_id in supervisor.containers:
        raise Conflict(f"container {container_id} already exists")
    container = supervisor.create_container(
        container_id, bundle, log_path, open_stdin, rotation, terminal
    )
    return {"pid": container.record.pid}


def _op_start(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    container = _get(supervisor, request)
    if container.record.status != CREATED or container.exited:
        status = STOPPED if container.exited else container.record.status
        raise Conflict(f"container {container.id} is {status}: only a created one can start")
    call_runtime("start", container.id, lambda: supervisor.runtime.start(container.id))
    container.record.status = RUNNING
    container.record.started_at = format_timestamp(time.time_ns())
    supervisor.save_record(container.record)
    log.info("container %s started", container.id)
    return {}


def _op_kill(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    exec_process = supervisor.execs.processes.get(str(request.get("id")))
    if exec_process is not None:
        # An exec that has not finished is an unreaped child, so its pid still belongs to it.
        if not exec_process.exited:
            os.kill(exec_process.record.pid, protocol.require_signal(request))
        return {}
    container = _get(supervisor, request)
    signal_number = protocol.require_signal(request)
    # Once reaped, the pid may belong to another process, so the runtime is not asked.
    if container.exited:
        raise Conflict(f"container {container.id} is not running")
    call_runtime("kill", container.id, lambda: supervisor.runtime.kill(container.id, signal_number))
    return {}


def _op_pause(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    container = _get_live(supervisor, request, "pause")
    call_runtime("pause", container.id, lambda: supervisor.runtime.pause(container.id))
    log.info("container %s paused", container.id)
    return {}


def _op_resume(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    container = _get_live(supervisor, request, "resume")
    call_runtime("resume", container.id, lambda: supervisor.runtime.resume(container.id))
    log.info("container %s resumed", container.id)
    return {}


def _op_update(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    container = _get_live(supervisor, request, "update")
    resources = request.get("resources")
    if not isinstance(resources, dict):
        raise InvalidArgument(
            f"invalid resources {resources!r}: expected an OCI linux.resources object"
        )
    call_runtime("update", container.id, lambda: supervisor.runtime.update(container.id, resources))
    return {}


def _op_processes(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    container = _get_live(supervisor, request, "list the processes of")
    pids = call_runtime("list", container.id, lambda: supervisor.runtime.processes(container.id))
    return {"pids": list(pids)}


def _op_exec(supervisor: Supervisor, connection: Connection, request: dict[str, Any]) -> None:
    container = _get_live(supervisor, request, "exec in")
    exec_id = protocol.require_container_id({"id": request.get("exec_id")})
    process = request.get("process")
    if not isinstance(process, dict):
        raise InvalidArgument(f"invalid process {process!r}: expected an OCI process object")
    tty = protocol.optional_bool(request, "tty", False)
    open_stdin = protocol.optional_bool(request, "open_stdin", False)
    exec_process = supervisor.execs.start(
        container.id, exec_id, process, tty=tty, open_stdin=open_stdin
    )
    connection.label = f"client fd {connection.fd} of exec {exec_id}"
    connection.send_message({"ok": True, "pid": exec_process.record.pid})
    streams = frozenset({protocol.STREAM_STDOUT, protocol.STREAM_STDERR})
    exec_process.attach(connection, streams, open_stdin)


def _op_resize(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    target = request.get("id")
    process = supervisor.execs.processes.get(target) if isinstance(target, str) else None
    if process is None:
        process = _get(supervisor, request)
    height = protocol.optional_int(request, "height", 0, 1)
    width = protocol.optional_int(request, "width", 0, 1)
    try:
        set_window_size(process, height, width)
    except OSError as error:
        raise SystemFailure(f"cannot resize the terminal of {process.id}: {error}") from None
    return {}


def _op_execs(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    container_id = protocol.require_container_id(request)
    return {"execs": supervisor.execs.states(container_id)}


def _get_live(supervisor: Supervisor, request: dict[str, Any], action: str) -> Container:
    """Return a container whose init has not exited, or raise Conflict for any other."""
    container = _get(supervisor, request)
    if container.exited or container.finished:
        raise Conflict(f"cannot {action} container {container.id}: it is not running")
    return container


def _op_delete(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any] | None:
    container = _get(supervisor, request)
    force = protocol.optional_bool(request, "force", False)
    if container.finished:
        supervisor.remove(container)
        return {}
    if container.record.status == RUNNING and not container.exited and not force:
        raise Conflict(
            f"container {container.id} is running: stop it first or delete it with force"
        )
    if not container.exited:
        supervisor.kill_quietly(container, signal.SIGKILL)
    _park(connection, container.delete_requests)
    return None


def _op_state(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    return {"container": _get(supervisor, request).record.to_state()}


def _op_list(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any]:
    return {"containers": [c.record.to_state() for c in supervisor.containers.values()]}


def _op_wait(
    supervisor: Supervisor, connection: Connection, request: dict[str, Any]
) -> dict[str, Any] | None:
    container = _get(supervisor, request)
    if container.finished:
        return exit_fields(container.record)
    _park(connection, container.waiters)
    return None


def _op_attach(supervisor: Supervisor, connection: Connection, request: dict[str, Any]) -> None:
    container = _get(supervisor, request)
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
            f"cannot attach stdin of container {container.id}: it was created without open_stdin"
        )
    close_stdin = protocol.optional_bool(request, "close_stdin", True)
    connection.label = f"client fd {connection.fd} of container {container.id}"
    connection.send_message({"ok": True})
    container.attach(connection, streams, stdin, close_stdin)


def _op_events(supervisor: Supervisor, connection: Connection, request: dict[str, Any]) -> None:
    connection.mode = Mode.EVENTS
    connection.label = f"event subscriber fd {connection.fd}"
    connection.send_message({"ok": True})
    supervisor.subscribers.append(connection)
    connection.add_close_callback(supervisor.subscribers.remove)


def _get(supervisor: Supervisor, request: dict[str, Any]) -> Container:
    container_id = protocol.require_container_id(request)
    container = supervisor.containers.get(container_id)
    if container is None:
        raise NotFound(f"No such container: {container_id}")
    return container


def _park(connection: Connection, queue: list[Connection]) -> None:
    """Hold ``connection`` in ``queue`` until the container finishes."""
    connection.mode = Mode.PARKED
    queue.append(connection)
    connection.add_close_callback(lambda closed: closed in queue and queue.remove(closed))


def exit_fields(record: ContainerRecord) -> dict[str, Any]:
    return {"exit_code": record.exit_code, "finished_at": record.finished_at}


OPERATIONS: dict[str, Operation] = {
    "ping": _op_ping,
    "create": _op_create,
    "start": _op_start,
    "kill": _op_kill,
    "pause": _op_pause,
    "resume": _op_resume,
    "update": _op_update,
    "processes": _op_processes,
    "exec": _op_exec,
    "resize": _op_resize,
    "execs": _op_execs,
    "delete": _op_delete,
    "state": _op_state,
    "list": _op_list,
    "wait": _op_wait,
    "attach": _op_attach,
    "events": _op_events,
}
