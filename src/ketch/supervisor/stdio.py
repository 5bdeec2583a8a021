"""The descriptors a container is created with: its stdio pipes and its json-file log.

The child ends are stdin's read end (or /dev/null) and the write ends of stdout and
stderr. They go to ``Runtime.create`` and are closed in the supervisor right after, so the
pipes reach end of file once the container's processes have closed them. The supervisor keeps the
other ends and the log. Every descriptor is close-on-exec in the supervisor, and the
runtime installs the child ends as the init's 0, 1 and 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ketch.errors import InvalidArgument, NotFound, SystemFailure
from ketch.supervisor import protocol
from ketch.supervisor.logs import JsonFileLog


@dataclass(frozen=True)
class LogRotation:
    """When a json-file log rotates: past ``max_size`` bytes (0: never), keeping
    ``max_files`` files."""

    max_size: int = 0
    max_files: int = 1


# Limitation: pipes only. A container whose spec requests a terminal gets no pseudo-terminal
# from the supervisor, so its output is framed, not raw as in Docker's tty mode.
@dataclass
class ContainerStdio:
    container_id: str
    log_file: JsonFileLog
    created_log: bool
    stdin_read_fd: int = -1
    stdin_write_fd: int | None = None
    stdout_read_fd: int = -1
    stdout_write_fd: int = -1
    stderr_read_fd: int = -1
    stderr_write_fd: int = -1
    _child_fds_closed: bool = field(default=False, repr=False)

    @classmethod
    def open(
        cls,
        container_id: str,
        log_path: Path,
        open_stdin: bool,
        rotation: LogRotation | None = None,
    ) -> ContainerStdio:
        """Open the log and make the pipes; on failure nothing stays open or created."""
        created_log = not os.path.lexists(log_path)
        log_file = _open_log(container_id, log_path, rotation or LogRotation())
        stdio = cls(container_id, log_file, created_log)
        try:
            stdio.stdout_read_fd, stdio.stdout_write_fd = os.pipe()
            stdio.stderr_read_fd, stdio.stderr_write_fd = os.pipe()
            if open_stdin:
                stdio.stdin_read_fd, stdio.stdin_write_fd = os.pipe()
            else:
                stdio.stdin_read_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            stdio.close_child_fds()
            stdio.abandon()
            message = f"cannot make stdio pipes for container {container_id}: {error}"
            raise SystemFailure(message) from None
        return stdio

    def child_fds(self) -> tuple[int, int, int]:
        """Return the descriptors that become the init's stdin, stdout and stderr."""
        return (self.stdin_read_fd, self.stdout_write_fd, self.stderr_write_fd)

    def output_fds(self) -> dict[int, int]:
        """Return the read ends of stdout and stderr, keyed by Engine API stream type."""
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
