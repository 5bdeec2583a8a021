"""The socket calls of ``create`` and the container's init, without importing :mod:`socket`.

Importing :mod:`socket` builds enum classes for its constants and imports
:mod:`selectors`, about 1.5 ms of a ``ketch-runc create`` by ``-X importtime`` on the
2-core test machine. ``create`` needs only a socket pair, one connect, an ioctl socket
and one SCM_RIGHTS send, and ``_socket``, the C module that :mod:`socket` wraps, has all
of them. Its sockets are ``_socket.socket`` objects: they have the methods of
``socket.socket`` that this module's callers use (send, recv, sendmsg, fileno, close),
but no ``with`` support, ``makefile`` or ``dup``. Where ``_socket`` is missing, as
outside CPython, :mod:`socket` is used instead.
"""

from __future__ import annotations

import struct

try:
    import _socket as _sockets
except ImportError:
    import socket as _sockets

# False at run time, so that this module does not import typing. Type checkers take the
# branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from _socket import socket as Socket

AF_INET: int = _sockets.AF_INET
AF_UNIX: int = _sockets.AF_UNIX
SOCK_DGRAM: int = _sockets.SOCK_DGRAM
SOCK_STREAM: int = _sockets.SOCK_STREAM
SOCK_SEQPACKET: int = _sockets.SOCK_SEQPACKET


def new_socket(family: int, kind: int) -> Socket:
    """Return a new close-on-exec socket of ``family`` and ``kind``."""
    return _sockets.socket(family, kind)


def socket_pair(kind: int) -> tuple[Socket, Socket]:
    """Return a connected AF_UNIX pair of ``kind``. Both ends are close-on-exec."""
    return _sockets.socketpair(AF_UNIX, kind)


def send_fds(sock: Socket, data: bytes, fds: list[int]) -> None:
    """Send ``data`` with the descriptors ``fds`` attached (SCM_RIGHTS) as one message."""
    rights = struct.pack(f"{len(fds)}i", *fds)
    sock.sendmsg([data], [(_sockets.SOL_SOCKET, _sockets.SCM_RIGHTS, rights)])
