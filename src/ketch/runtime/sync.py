"""Messages between ``Runtime.create`` (the parent) and the two processes it forks.

``create`` forks a *bootstrap* process, which joins the container's cgroups, joins or
unshares its namespaces and forks the container's *init* (PID 1 of a new pid namespace);
the init sets up the rootfs and the process and then waits on exec.fifo for ``start``.
They talk over an AF_UNIX SOCK_SEQPACKET socket pair made by the parent before the first
fork: each message is one JSON object in one packet, so no message is split or merged.

==================  ==========  ==========================================================
sender -> receiver  message     meaning
==================  ==========  ==========================================================
bootstrap->parent   ``pid``     ``{"type": "pid", "pid": N}``: the init was forked; N is
                                its pid in the parent's pid namespace.
parent->bootstrap   ``pid-ack`` ``{"type": "pid-ack"}``: the parent holds a pidfd for the
                                init, so the bootstrap may exit. Until then the init, even
                                if it died at once, is the bootstrap's unreaped child, so
                                its pid cannot be reused before the parent opens the pidfd.
init->parent        ``ready``   ``{"type": "ready"}``: setup is done (mounts, pivot_root,
                                user, executable found); the init now waits on exec.fifo.
bootstrap or init   ``error``   ``{"type": "error", "kind": K, "message": M}``: a step
->parent                        failed; K is a class name from :mod:`ketch.errors`. The
                                sender exits right after.
==================  ==========  ==========================================================

The init starts its work only after the bootstrap has sent ``pid`` (it waits on a pipe
from the bootstrap), so ``pid`` always comes first. End of file on the parent's end
before ``ready`` means the children died without reporting; ``create`` then fails with
SystemFailure.
"""

from __future__ import annotations

import json
import select
import socket
from typing import Any

from ketch import errors

PID = "pid"
PID_ACK = "pid-ack"
READY = "ready"
ERROR = "error"

_MAX_MESSAGE = 65536


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """Return (parent end, child end); both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message_type: str, **fields: Any) -> None:
    sock.send(json.dumps({"type": message_type, **fields}).encode())


def send_error(sock: socket.socket, error: BaseException) -> None:
    """Report ``error``; a KetchError keeps its class, anything else is a SystemFailure."""
    if isinstance(error, errors.KetchError):
        kind, message = type(error).__name__, str(error)
    elif isinstance(error, OSError):
        kind, message = "SystemFailure", _os_error_text(error)
    else:
        kind, message = "SystemFailure", f"{type(error).__name__}: {error}"
    send(sock, ERROR, kind=kind, message=message)


def receive(sock: socket.socket, timeout: float) -> dict[str, Any] | None:
    """Return the next message, or None at end of file; raise TimeoutError after
    ``timeout`` seconds without one."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        raise TimeoutError
    data = sock.recv(_MAX_MESSAGE)
    if not data:
        return None
    return json.loads(data)


def error_from_message(message: dict[str, Any]) -> errors.KetchError:
    """Turn an ``error`` message back into the ketch.errors class it names."""
    cls = getattr(errors, str(message.get("kind")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.KetchError)):
        cls = errors.SystemFailure
    return cls(str(message.get("message")))


def _os_error_text(error: OSError) -> str:
    text = error.strerror or str(error)
    if error.filename is not None:
        return f"{text}: {error.filename}"
    return text
