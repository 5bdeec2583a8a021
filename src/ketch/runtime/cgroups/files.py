"""Reading and writing cgroup interface files, with errors that name the file and value."""

from __future__ import annotations

import os
from pathlib import Path

from ketch.errors import SystemFailure


def write_value(directory: Path, name: str, value: str | int) -> None:
    """Write ``value`` to the interface file ``name`` in the cgroup ``directory``."""
    path = directory / name
    try:
        # One write(2) per value: the kernel parses each write as one request.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as error:
        raise SystemFailure(f"cannot write {value!r} to {path}: {error.strerror}") from None


def read_value(directory: Path, name: str) -> str:
    path = directory / name
    try:
        return path.read_text().strip()
    except OSError as error:
        raise SystemFailure(f"cannot read {path}: {error.strerror}") from None


def read_pids(directory: Path) -> list[int]:
    """Return the processes in the cgroup (cgroup.procs), or [] when it is gone."""
    try:
        text = (directory / "cgroup.procs").read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split()]
