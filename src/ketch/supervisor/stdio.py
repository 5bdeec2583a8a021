"""The descriptors a container is created with: its stdio pipes and its json-file log.

The child ends are stdin's read end (or /dev/null) and the write ends of stdout and
stderr. They go to ``Runtime.create`` and are closed in the supervisor right after, so the
pipes reach end of file once the container's processes have closed them. The supervisor keeps the
other ends and the log. Every descriptor is close-on-exec in the supervisor, and the
runtime installs the child ends as the init's 0, 1 and 2.
"""

from __future__ import annotations

import os
from pathlib import Path

from ketch.errors import InvalidArgument, NotFound, SystemFailure
from ketch.supervisor import protocol
from ketch.supervisor.logs import JsonFileLog

# Plain classes, not dataclasses: the supervisor process does not import dataclasses, which
# brings in inspect and ast, about 1 MiB of memory.


class LogRotation:
    """When a json-file log rotates: past ``max_size`` bytes (0: never), keeping
    ``max_files`` files."""

    __slots__ = ("max_size", "max_files")

    def __init__(self, max_size: int = 0, max_files: int = 1) -> None:
        self.max_size = max_size
        self.max_files = max_files

    def __repr__(self) -> str:
        return f"LogRotation(max_size={self.max_size}, max_files={self.max_files})"


class ContainerStdio:
    """The stdio of a container's init or of an exec'd process.

    Without a terminal these are three pipes (stdin's is /dev/null unless ``open_stdin``).
    With one, the child gets /dev/null for all three, because the runtime replaces them
    with the pty's slave, and :meth:`take_console` installs the pty master that arrives
    over the console socket as both the output and, with ``open_stdin``, the input.
    A process without a log (an exec) has ``log_file`` None.
    """

    def __init__(
        self,
        container_id: str,
        log_file: JsonFileLog | None,
        created_log: bool,
        terminal: bool = False,
    ) -> None:
        self.container_id = container_id
        self.log_file = log_file
        self.created_log = created_log
        self.terminal = terminal
        self.stdin_read_fd = -1
        self.stdin_write_fd: int | None = None
        self.stdout_read_fd = -1
        self.stdout_write_fd = -1
        self.stderr_read_fd = -1
        self.stderr_write_fd = -1
        self.console_fd = -1
        self._child_fds_closed = False

    @classmethod
    def open(
        cls,
        container_id: str,
        log_path: Path | None,
        open_stdin: bool,
        rotation: LogRotation | None = None,
        terminal: bool = False,
    ) -> ContainerStdio:
        """Open the log and make the pipes; on failure nothing stays open or created."""
        created_log = log_path is not None and not os.path.lexists(log_path)
        log_file = None
        if log_path is not None:
            log_file = _open_log(container_id, log_path, rotation or LogRotation())
        stdio = cls(container_id, log_file, created_log, terminal)
        try:
            if terminal:
                stdio._open_null_fds()
            else:
                stdio._open_pipes(open_stdin)
        except OSError as error:
            stdio.close_child_fds()
            stdio.abandon()
            message = f"cannot make stdio pipes for container {container_id}: {error}"
            raise SystemFailure(message) from None
        return stdio

    def _open_pipes(self, open_stdin: bool) -> None:
        self.stdout_read_fd, self.stdout_write_fd = os.pipe()
        self.stderr_read_fd, self.stderr_write_fd = os.pipe()
        if open_stdin:
            self.stdin_read_fd, self.stdin_write_fd = os.pipe()
        else:
            self.stdin_read_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def _open_null_fds(self) -> None:
        self.stdin_read_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.stdout_write_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self.stderr_write_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    def take_console(self, master: int, open_stdin: bool) -> None:
        """Use the pty master as the output and, with ``open_stdin``, as the input."""
        os.set_inheritable(master, False)
        self.console_fd = master
        self.stdout_read_fd = master
        if open_stdin:
            self.stdin_write_fd = os.dup(master)
            os.set_inheritable(self.stdin_write_fd, False)

    def child_fds(self) -> tuple[int, int, int]:
        """Return the descriptors that become the init's stdin, stdout and stderr."""
        return (self.stdin_read_fd, self.stdout_write_fd, self.stderr_write_fd)

    def output_fds(self) -> dict[int, int]:
        """Return the read ends of stdout and stderr, keyed by Engine API stream type.

        A terminal has one output, the pty master, which the API shows as stdout.
        """
        if self.terminal:
            return {protocol.STREAM_STDOUT: self.stdout_read_fd}
        return {
            protocol.STREAM_STDOUT: self.stdout_read_fd,
            protocol.STREAM_STDERR: self.stderr_read_fd,
        }

    def close_child_fds(self) -> None:
        if self._child_fds_closed:
            return
        self._child_fds_closed = True
        _close_all(self.stdin_read_fd, self.stdout_write_fd, self.stderr_write_fd)

    def abandon(self) -> None:
        """Close the supervisor's ends and the log after a failed create, and remove the
        log file if this create made it."""
        stdin_write_fd = -1 if self.stdin_write_fd is None else self.stdin_write_fd
        _close_all(self.stdout_read_fd, self.stderr_read_fd, stdin_write_fd)
        if self.log_file is not None:
            self.log_file.close()
            if self.created_log:
                self.log_file.path.unlink(missing_ok=True)


def _open_log(container_id: str, log_path: Path, rotation: LogRotation) -> JsonFileLog:
    try:
        return JsonFileLog(log_path, rotation.max_size, rotation.max_files)
    except FileNotFoundError:
        raise NotFound(
            f"cannot open log {log_path} of container {container_id}: its directory does not exist"
        ) from None
    except OSError as error:
        if os.path.islink(log_path):
            raise InvalidArgument(
                f"invalid log_path {log_path} of container {container_id}: it is a symbolic "
                "link; expected a regular file or no file"
            ) from None
        raise SystemFailure(
            f"cannot open log {log_path} of container {container_id}: {error.strerror}"
        ) from None


def _close_all(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)
