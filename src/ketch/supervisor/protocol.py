"""The engine <-> supervisor protocol: newline-delimited JSON over a unix socket.

The supervisor listens on ``<exec_root>/supervisor.sock`` (mode 0600). A client sends one
request per line, a JSON object with an ``op`` field, and reads one response line per
request. A connection may carry any number of requests in turn. ``attach`` and ``events``
turn the connection into a stream after their response line, and ``wait`` sends its
response once the container has stopped.

Requests and their successful responses (every response also has ``"ok": true``):

=========  ===============================================  =================================
op         request fields                                   response fields
=========  ===============================================  =================================
ping       (none)                                           pid, protocol
create     id, bundle, log_path, open_stdin (default false) pid
           tty (default false: pipes; true: a pty, whose
           output is sent as stdout),
           log_max_size (bytes, default 0: never rotate),
           log_max_files (default 1)
start      id                                               (none)
kill       id (a container or exec id), signal (1-64)       (none)
delete     id, force (default false)                        (none), once the container is gone
state      id                                               container (a state object)
list       (none)                                           containers (state objects)
wait       id                                               exit_code, finished_at
attach     id, stdout, stderr (default true), stdin         (none), then frames (see below)
           (default false), close_stdin (default true:
           the client's end of stream closes stdin)
events     (none)                                           (none), then one event per line
pause      id                                               (none), once frozen
resume     id                                               (none), once thawed
update     id, resources (an OCI linux.resources object)    (none)
processes  id                                               pids (host pids in its cgroup)
exec       id, exec_id, process (an OCI process object),    pid, then frames (see below)
           tty, open_stdin (both default false)
resize     id (a container or exec id), height, width       (none)
execs      id                                               execs (exec state objects)
=========  ===============================================  =================================

A state object is ``{"id", "status", "pid", "exit_code", "started_at", "finished_at"}``.
``status`` is ``created``, ``running`` or ``stopped``; ``exit_code`` is the process's exit
status, or 128 + the signal number when a signal ended it; times are RFC 3339 UTC with
nanoseconds, or null when the event has not happened.

An exec state object is ``{"id", "exec_id", "pid", "status", "exit_code"}``, where ``id``
is the container's, ``status`` is ``running`` or ``stopped`` and ``exit_code`` is null
while it runs. ``execs`` lists the container's running execs and the finished ones the
supervisor still remembers (see :mod:`ketch.supervisor.execs`).

A failed request gets ``{"ok": false, "error": "<message>", "kind": "<class>"}``, where the
kind is the name of a class in :mod:`ketch.errors` (``NotFound``, ``Conflict``,
``InvalidArgument``, ``Unavailable``, ``Forbidden``, ``SystemFailure``), so the client can
raise the same class with the same message.

``delete`` of a running container needs ``force``; a created or stopped one does not. When
the container's init is still alive, the supervisor kills it with SIGKILL and answers once
the exit is recorded and the runtime state is gone, so waiters and event subscribers see
that exit first.

After the ``attach`` response the supervisor sends the container's output in the Docker
Engine API's multiplexed format: frames of an 8-byte header (stream type 1 for stdout or
2 for stderr, three zero bytes, the payload length as a big-endian uint32) followed by the
payload. The connection closes once the container's output has ended. With ``stdin``,
bytes the client sends are written to the container's stdin (the container must have been
created with ``open_stdin``), and the client's end of stream (shutdown for writing) closes
the container's stdin. A client that falls more than ``MAX_CLIENT_BACKLOG`` bytes behind
is disconnected; the log file still gets every byte.

After the ``exec`` response the connection is the exec's attach stream: frames as above,
stdin from the client when ``open_stdin``, and a last frame of type ``STREAM_EXIT`` (255)
whose payload is ``{"exit_code": n}`` in JSON, sent once the process has exited and its
output is delivered.

After the ``events`` response the supervisor sends one JSON object per line, currently
``{"type": "exit", "id", "exit_code", "finished_at"}`` and ``{"type": "exec_exit", "id",
"exec_id", "exit_code"}``, sent after the container's
output has been delivered to its attach clients. A subscriber that falls behind by more
than ``MAX_CLIENT_BACKLOG`` bytes is disconnected; it can reconnect and call ``list`` to
catch up, since the supervisor records every exit on disk.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import PurePosixPath

from ketch.errors import (
    Conflict,
    Forbidden,
    InvalidArgument,
    KetchError,
    NotFound,
    SystemFailure,
    Unavailable,
)

# False at run time, so that the supervisor process does not import typing (see
# ketch.supervisor.records). Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
SOCKET_NAME = "supervisor.sock"

# A request line longer than this is rejected, so a client cannot make the supervisor
# buffer without bound.
MAX_REQUEST_BYTES = 1 << 20

# Bytes an attach client or event subscriber may have queued and unread before the
# supervisor disconnects it.
MAX_CLIENT_BACKLOG = 4 << 20

STREAM_STDIN = 0
STREAM_STDOUT = 1
STREAM_STDERR = 2
STREAM_NAMES = {STREAM_STDOUT: "stdout", STREAM_STDERR: "stderr"}
# The last frame of an exec stream: its payload is ``{"exit_code": n}`` in JSON. It is no
# Engine API stream type, so the engine takes it off before the stream reaches a client.
STREAM_EXIT = 255

FRAME_HEADER = struct.Struct(">BxxxI")

OPS = frozenset(
    {
        "ping",
        "create",
        "start",
        "kill",
        "delete",
        "state",
        "list",
        "wait",
        "attach",
        "events",
        "pause",
        "resume",
        "update",
        "processes",
        "exec",
        "resize",
        "execs",
    }
)

ERROR_CLASSES: dict[str, type[KetchError]] = {
    cls.__name__: cls
    for cls in (NotFound, Conflict, InvalidArgument, Unavailable, Forbidden, SystemFailure)
}

# The characters runc accepts in a container id. The id also names files under the exec
# root, so "." and ".." and a leading dot are rejected as well.
_CONTAINER_ID = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_+.-]{0,127}")


def encode_message(message: dict[str, Any]) -> bytes:
    """Serialize one protocol message as a JSON line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode_message(line: bytes) -> dict[str, Any]:
    """Parse one JSON line into a message object; raise InvalidArgument when it is not one."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"invalid protocol message: not JSON: {error}") from None
    if not isinstance(message, dict):
        raise InvalidArgument("invalid protocol message: expected a JSON object")
    return message


def decode_request(line: bytes) -> dict[str, Any]:
    """Parse a request line and check that its ``op`` is one the protocol defines."""
    request = decode_message(line)
    op = request.get("op")
    if op not in OPS:
        expected = ", ".join(sorted(OPS))
        raise InvalidArgument(f"invalid request: unknown op {op!r}; expected one of {expected}")
    return request


def error_response(error: KetchError) -> dict[str, Any]:
    """Build the failure response that carries ``error`` to the client."""
    kind = type(error).__name__ if type(error).__name__ in ERROR_CLASSES else "SystemFailure"
    return {"ok": False, "error": str(error), "kind": kind}


def check_response(response: dict[str, Any]) -> dict[str, Any]:
    """Return a successful response; raise the ketch.errors class a failure names."""
    if response.get("ok") is True:
        return response
    message = str(response.get("error") or "supervisor request failed without a message")
    error_class = ERROR_CLASSES.get(str(response.get("kind")), SystemFailure)
    raise error_class(message)


def encode_frame(stream: int, payload: bytes) -> bytes:
    """Wrap ``payload`` in the Engine API's multiplexed stream header."""
    return FRAME_HEADER.pack(stream, len(payload)) + payload


def require_container_id(request: dict[str, Any]) -> str:
    """Return the request's ``id``; raise InvalidArgument unless it is a valid container id."""
    value = request.get("id")
    if not isinstance(value, str) or not _CONTAINER_ID.fullmatch(value):
        raise InvalidArgument(
            f"invalid container id {value!r}: expected 1 to 128 letters, digits, '_', '+', "
            "'-' or '.', not starting with '.'"
        )
    return value


def require_absolute_path(request: dict[str, Any], field: str) -> PurePosixPath:
    """Return the request's ``field`` as an absolute path; raise InvalidArgument if it is not."""
    value = request.get(field)
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise InvalidArgument(f"invalid {field} {value!r}: expected an absolute path")
    return PurePosixPath(value)


def optional_bool(request: dict[str, Any], field: str, default: bool) -> bool:
    """Return the request's boolean ``field``, or ``default`` when it is absent."""
    value = request.get(field, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"invalid {field} {value!r}: expected true or false")
    return value


def optional_int(request: dict[str, Any], field: str, default: int, minimum: int) -> int:
    """Return the request's integer ``field`` (at least ``minimum``), or ``default``."""
    value = request.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"invalid {field} {value!r}: expected an integer >= {minimum}")
    return value


def require_signal(request: dict[str, Any]) -> int:
    """Return the request's ``signal`` as a number from 1 to 64."""
    value = request.get("signal")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise InvalidArgument(f"invalid signal {value!r}: expected a signal number from 1 to 64")
    return value
