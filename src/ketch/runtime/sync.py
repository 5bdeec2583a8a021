"""Messages between ``Runtime.create`` (the parent) and the container's init.

The parent forks the init; the init sets up the rootfs and the process and then waits
on exec.fifo for ``start``. They talk over an AF_UNIX SOCK_SEQPACKET socket pair made by
the parent before the fork: each message is one JSON object in one packet, so no
message is split or merged.

==============  ============  ===========================================================
sender          message       meaning
==============  ============  ===========================================================
init -> parent  ``hooks``     ``{"type": "hooks"}``: the mounts are made and pivot_root is
                              next; sent only when the config has prestart,
                              createRuntime, createContainer or startContainer hooks. The
                              init waits for ``continue``.
parent -> init  ``continue``  ``{"type": "continue", "pid": P}``: the prestart and
                              createRuntime hooks ran; P is the init's pid in the
                              caller's pid namespace, which the init's own hooks put in
                              their state.
init -> parent  ``ready``     ``{"type": "ready"}``: setup is done (mounts, pivot_root,
                              user, executable found); the init now waits on exec.fifo.
init -> parent  ``error``     ``{"type": "error", "kind": K, "message": M}``: a step
                              failed; K is a class name from :mod:`ketch.errors`. The
                              init exits right after.
==============  ============  ===========================================================

The parent needs no message to learn the init's pid: the init is its child, or with a
user namespace :mod:`ketch.runtime.userns` reports it first. While the init sets up,
the parent moves it into the container's cgroups, unless the init joins them itself
(``_ContainerCgroups`` in :mod:`ketch.runtime.create` lists when). End of file on the
parent's end before ``ready`` means the init died without reporting; ``create`` then
fails with SystemFailure.
"""

from __future__ import annotations

import posix
import select

from ketch import errors
from ketch.runtime import json_text, sockets

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.runtime.sockets import Socket

READY = "ready"
HOOKS = "hooks"
CONTINUE = "continue"
ERROR = "error"

_MAX_MESSAGE = 65536


def socket_pair() -> tuple[Socket, Socket]:
    """Return (parent end, init end); both close-on-exec."""
    return sockets.socket_pair(sockets.SOCK_SEQPACKET)


def send(sock: Socket, message_type: str, **fields: Any) -> None:
    sock.send(json_text.dumps({"type": message_type, **fields}).encode())


def send_error(sock: Socket, error: BaseException) -> None:
    """Report ``error``; a KetchError keeps its class, anything else is a SystemFailure."""
    if isinstance(error, errors.KetchError):
        kind, message = type(error).__name__, str(error)
    elif isinstance(error, OSError):
        kind, message = "SystemFailure", _os_error_text(error)
    else:
        kind, message = "SystemFailure", f"{type(error).__name__}: {error}"
    send(sock, ERROR, kind=kind, message=message)


def report_error(sock: Socket, error: BaseException) -> None:
    """Send ``error`` to the parent, or write it to stderr when the socket is closed."""
    try:
        send_error(sock, error)
    except OSError:
        write_stderr(f"ketch-runc: {error}\n")


def write_stderr(text: str) -> None:
    """Write ``text`` to descriptor 2 with one write(2), ignoring a closed stderr."""
    try:
        posix.write(2, text.encode(errors="replace"))
    except OSError:
        pass


def receive(sock: Socket, timeout: float) -> dict[str, Any] | None:
    """Return the next message, or None at end of file; raise TimeoutError after
    ``timeout`` seconds without one."""
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        raise TimeoutError
    data = sock.recv(_MAX_MESSAGE)
    if not data:
        return None
    return json_text.loads(data.decode())


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
