"""Process-level plumbing of the supervisor: the pid file lock, the listening socket, the
signal wakeup pipe, the open-file limit and the release of free heap memory.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import socket
from collections.abc import Callable
from pathlib import Path

from ketch.errors import Conflict, InvalidArgument
from ketch.supervisor.plainlog import get_logger

log = get_logger(__name__)

# sun_path in struct sockaddr_un has room for 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


def lock_pid_file(pid_path: Path) -> int:
    """Lock ``pid_path`` with flock, write this process's pid into it and return the fd.

    The lock lasts as long as the descriptor stays open, so it also ends when the process
    dies. Raise Conflict naming the other supervisor's pid when the lock is held.
    """
    fd = os.open(pid_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Conflict(
            f"another supervisor (pid {owner}) is running for exec root {pid_path.parent}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def listen_unix(socket_path: Path) -> socket.socket:
    """Listen on ``socket_path`` with mode 0600, replacing a stale socket file.

    The caller must hold the pid file lock: it proves that no other supervisor owns the
    path, so a socket file found there was left by one that died.
    """
    if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH_BYTES:
        raise InvalidArgument(
            f"invalid exec root {socket_path.parent}: the socket path {socket_path} is longer "
            f"than the {MAX_SOCKET_PATH_BYTES} bytes a unix socket address can hold"
        )
    socket_path.unlink(missing_ok=True)
    # The socket is bound under a temporary name and renamed once it listens, so a client
    # that finds the path never gets "connection refused" from a socket that is bound but
    # not listening yet.
    temporary_path = socket_path.with_name(f".{socket_path.name}.tmp")
    temporary_path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(temporary_path))
    finally:
        os.umask(old_umask)
    sock.listen(128)
    os.rename(temporary_path, socket_path)
    sock.setblocking(False)
    return sock


class Listener:
    """The listening socket as an event loop handler; ``on_accept`` gets each new client."""

    def __init__(self, sock: socket.socket, on_accept: Callable[[socket.socket], None]) -> None:
        self.sock = sock
        self._on_accept = on_accept

    def on_readable(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as error:
                # EMFILE and the like: the client stays queued and is retried next time.
                log.error("cannot accept a client on %s: %s", self.sock.getsockname(), error)
                return
            self._on_accept(client)

    def on_writable(self) -> None:
        pass


class WakeupPipe:
    """The pipe ``signal.set_wakeup_fd`` writes a byte to for each signal, as a handler
    that empties it and calls ``on_signal``."""

    def __init__(self, on_signal: Callable[[], None]) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._on_signal = on_signal

    def on_readable(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._on_signal()

    def on_writable(self) -> None:
        pass


def raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard one, since each container costs 3 or 4
    descriptors. Containers inherit the raised limit unless their spec sets RLIMIT_NOFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_libc = ctypes.CDLL(None)


def release_free_heap() -> None:
    """Return the free pages of glibc's heap to the kernel with malloc_trim(3).

    glibc's free() returns main-heap memory to the kernel only by shrinking the heap from
    its top, so a burst of small allocations freed below a live one stays resident.
    Compiling ketchd's default seccomp profile with libseccomp is such a burst: about
    1 MiB, of which 0.85 MiB stayed resident in the supervisor after its first create
    (glibc 2.36, on the 2-core test machine). The call took under 0.1 ms there, also with
    40 containers. Does nothing where the C library has no malloc_trim (musl, for example).
    """
    malloc_trim = getattr(_libc, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
