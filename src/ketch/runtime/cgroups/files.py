"""Reading and writing cgroup interface files, with errors that name the file and value."""

from __future__ import annotations

import os

from ketch.errors import SystemFailure

# False at run time, so that ``ketch-runc state`` does not import pathlib for the freezer's
# files. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def write_value(directory: Path | str, name: str, value: str | int) -> None:
    """Write ``value`` to the interface file ``name`` in the cgroup ``directory``."""
    path = os.path.join(directory, name)
    try:
        # One write(2) per value: the kernel parses each write as one request.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as error:
        raise SystemFailure(f"cannot write {value!r} to {path}: {error.strerror}") from None


def read_value(directory: Path | str, name: str) -> str:
    path = os.path.join(directory, name)
    try:
        return read_text(path).strip()
    except OSError as error:
        raise SystemFailure(f"cannot read {path}: {error.strerror}") from None


def read_pids(directory: Path | str) -> list[int]:
    """Return the processes in the cgroup (cgroup.procs), or [] when it is gone."""
    try:
        text = read_text(os.path.join(directory, "cgroup.procs"))
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split()]


def read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read()
