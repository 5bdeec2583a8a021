"""Freezing and thawing a container's cgroup, for ``pause`` and ``resume``.

cgroup v1 has the freezer controller: ``freezer.state`` takes FROZEN or THAWED and reads
FREEZING until every task has stopped. cgroup v2 has ``cgroup.freeze`` (0 or 1) in every
non-root cgroup, and ``cgroup.events`` reports ``frozen 1`` once the freeze is complete.
Both wait for the kernel to finish, so that ``pause`` returns with the processes stopped.
"""

from __future__ import annotations

import time

from ketch.errors import SystemFailure
from ketch.runtime.cgroups.files import read_text, read_value, write_value
from ketch.runtime.paths import join

# False at run time, so that ``ketch-runc state``, which reads the freezer's files, does not
# import pathlib. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

CONTROLLER = "freezer"

# Seconds to wait for every task to stop; a task in uninterruptible sleep delays it.
FREEZE_TIMEOUT = 10.0


def freeze_v1(directory: Path) -> None:
    write_value(directory, "freezer.state", "FROZEN")
    _wait_for(lambda: read_value(directory, "freezer.state") == "FROZEN", directory)


def thaw_v1(directory: Path) -> None:
    write_value(directory, "freezer.state", "THAWED")


def frozen_v1(directory: Path | str) -> bool:
    try:
        return read_text(join(directory, "freezer.state")).strip() == "FROZEN"
    except OSError:
        return False


def freeze_v2(directory: Path) -> None:
    write_value(directory, "cgroup.freeze", "1")
    _wait_for(lambda: frozen_v2(directory), directory)


def thaw_v2(directory: Path) -> None:
    write_value(directory, "cgroup.freeze", "0")


def frozen_v2(directory: Path | str) -> bool:
    try:
        events = read_text(join(directory, "cgroup.events")).split("\n")
    except OSError:
        return False
    return "frozen 1" in events


def _wait_for(condition: Callable[[], bool], directory: Path) -> None:
    deadline = time.monotonic() + FREEZE_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise SystemFailure(
                f"cannot freeze cgroup {directory}: its tasks did not stop within "
                f"{FREEZE_TIMEOUT} s"
            )
        time.sleep(0.001)
