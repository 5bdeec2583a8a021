"""Reading and writing cgroup interface files and removing cgroup directories.

Errors name the file or directory, and the value. The functions take a str or a Path, so
that ``ketch-runc state`` and ``delete`` can use them without importing pathlib.
"""

from __future__ import annotations

import errno
import posix
import time

from ketch.errors import SystemFailure
from ketch.runtime.paths import join

# False at run time, so that this module does not import pathlib. For the same reason it
# calls posix, not os (see ketch.runtime.paths). Type checkers take the branch below as
# true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def write_value(directory: Path | str, name: str, value: str | int) -> None:
    """Write ``value`` to the interface file ``name`` in the cgroup ``directory``."""
    path = join(directory, name)
    try:
        # One write(2) per value: the kernel parses each write as one request.
        fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
        try:
            posix.write(fd, str(value).encode())
        finally:
            posix.close(fd)
    except OSError as error:
        raise SystemFailure(f"cannot write {value!r} to {path}: {error.strerror}") from None


def read_value(directory: Path | str, name: str) -> str:
    path = join(directory, name)
    try:
        return read_text(path).strip()
    except OSError as error:
        raise SystemFailure(f"cannot read {path}: {error.strerror}") from None


def read_pids(directory: Path | str) -> list[int]:
    """Return the processes in the cgroup (cgroup.procs), or [] when it is gone."""
    try:
        text = read_text(join(directory, "cgroup.procs"))
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split()]


def read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def remove_directory(directory: Path | str, wait_seconds: float = 2.0) -> None:
    """rmdir a cgroup, retrying while it still has exiting processes (EBUSY)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            posix.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise SystemFailure(f"cannot remove cgroup {directory}: {error.strerror}") from None
            time.sleep(0.01)


def remove_directories(directories: list[Path] | list[str]) -> None:
    """Remove every cgroup in ``directories``, then raise one error naming each failure."""
    errors = []
    for directory in directories:
        try:
            remove_directory(directory)
        except SystemFailure as error:
            errors.append(str(error))
    if errors:
        raise SystemFailure("; ".join(errors))
