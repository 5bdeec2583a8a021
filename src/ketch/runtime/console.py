"""Terminals for containers whose config sets ``process.terminal``.

The protocol is runc's console socket. The caller listens on a unix socket and passes
its path to ``create`` (``--console-socket``). The init makes a pseudo-terminal inside
the container and sends the master side back over that socket:

================  =========================================================================
sender            message
================  =========================================================================
init -> caller    one stream message whose data is the pty's path (``/dev/ptmx``) and whose
                  SCM_RIGHTS ancillary data carries the pty master's descriptor
================  =========================================================================

The init opens /dev/ptmx in the container's own devpts, after pivot_root, so the pty
belongs to the container. Its slave side becomes the init's stdin, stdout, stderr and
controlling terminal. The caller then reads and writes the master (containerd's shim
does, and :func:`proxy_terminal` does for ``ketch-runc run``).
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from ketch.errors import NotFound, SystemFailure
from ketch.runtime import signals, sockets

# False at run time, so that this module does not import typing or pathlib. Type checkers
# take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from pathlib import Path

    from ketch.runtime.sockets import Socket

# ioctl requests from <asm-generic/ioctls.h> that Python's termios does not name.
TIOCSPTLCK = 0x40045431  # lock or unlock the slave of a pty master
TIOCGPTPEER = 0x5441  # open the slave of a pty master (Linux 4.13), given open flags

PTY_NAME = b"/dev/ptmx"


def connect(path: Path) -> Socket:
    """Connect to the caller's console socket; done in the parent, before the fork."""
    sock = sockets.new_socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise NotFound(f"console socket {path} does not exist") from None
    except OSError as error:
        sock.close()
        raise SystemFailure(f"cannot connect to console socket {path}: {error.strerror}") from None
    return sock


def set_up_terminal(console: Socket, uid: int, gid: int, size: tuple[int, int] | None) -> None:
    """In the init: make the pty, send its master, and take its slave as 0, 1, 2 and
    the controlling terminal. The init must be a session leader."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        if size is not None:
            set_window_size(master, *size)
        sockets.send_fds(console, PTY_NAME, [master])
    finally:
        os.close(master)
    # The process may run as another user and must be able to reopen its terminal.
    os.fchown(slave, uid, gid)
    for target in range(3):
        os.dup2(slave, target)
    if slave > 2:
        os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def receive_master(listener: socket.socket) -> int:
    """Accept the init's connection on ``listener`` and return the pty master it sends."""
    import socket

    connection, _ = listener.accept()
    with connection:
        _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
    if not fds:
        raise SystemFailure("the container's init sent no terminal over the console socket")
    return fds[0]


def set_window_size(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def proxy_terminal(master: int, stdin: int = 0, stdout: int = 1) -> None:
    """Copy ``stdin`` to the pty master and the master to ``stdout`` until the
    container's side of the pty is closed, with ``stdin`` in raw mode if it is a terminal.

    The window size of ``stdin``'s terminal is copied to the pty at the start and on
    every SIGWINCH.
    """
    import tty

    saved_mode = None
    if os.isatty(stdin):
        saved_mode = termios.tcgetattr(stdin)
        tty.setraw(stdin)
        _copy_window_size(stdin, master)
        signals.set_handler(signals.SIGWINCH, lambda *_: _copy_window_size(stdin, master))
    try:
        _copy_until_closed(master, stdin, stdout)
    finally:
        if saved_mode is not None:
            signals.set_handler(signals.SIGWINCH, signals.SIG_DFL)
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved_mode)


def _copy_window_size(source: int, master: int) -> None:
    try:
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)
    except OSError:
        pass  # not a terminal after all, or the pty is gone


def _copy_until_closed(master: int, stdin: int, stdout: int) -> None:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(master, selectors.EVENT_READ)
        try:
            selector.register(stdin, selectors.EVENT_READ)
        except (ValueError, OSError):
            pass  # stdin that cannot be polled (a regular file, /dev/null): no input
        while True:
            for key, _ in selector.select():
                if key.fd == master:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""  # EIO: every slave descriptor is closed
                    if not data:
                        return
                    _write_all(stdout, data)
                else:
                    data = os.read(stdin, 65536)
                    if not data:
                        selector.unregister(stdin)
                    else:
                        _write_all(master, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
