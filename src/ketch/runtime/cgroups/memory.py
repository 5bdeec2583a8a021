"""The memory controller: limit, reservation and swap from linux.resources.memory.

In the OCI spec ``swap`` is the limit of memory plus swap together, which is what cgroup
v1's memory.memsw.limit_in_bytes takes; cgroup v2's memory.swap.max takes swap alone, so
the v2 value is ``swap - limit``. -1 means unlimited in both.
"""

from __future__ import annotations

import os

from ketch.errors import InvalidArgument
from ketch.runtime.cgroups.files import write_value

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.runtime.config import Resources

CONTROLLER = "memory"


def wanted(resources: Resources) -> bool:
    return any(
        value is not None
        for value in (resources.memory_limit, resources.memory_reservation, resources.memory_swap)
    )


def apply_v1(directory: str, resources: Resources) -> None:
    if resources.memory_limit is not None:
        write_value(directory, "memory.limit_in_bytes", resources.memory_limit)
    if resources.memory_swap is not None:
        if not os.path.exists(os.path.join(directory, "memory.memsw.limit_in_bytes")):
            raise InvalidArgument(
                "linux.resources.memory.swap is set, but the kernel has no swap "
                f"accounting (no memory.memsw.limit_in_bytes in {directory})"
            )
        # memsw must stay >= limit, so it is written after the limit on a new cgroup.
        write_value(directory, "memory.memsw.limit_in_bytes", resources.memory_swap)
    if resources.memory_reservation is not None:
        write_value(directory, "memory.soft_limit_in_bytes", resources.memory_reservation)


def apply_v2(directory: str, resources: Resources) -> None:
    if resources.memory_limit is not None:
        write_value(directory, "memory.max", _v2_bytes(resources.memory_limit))
    if resources.memory_reservation is not None:
        write_value(directory, "memory.low", _v2_bytes(resources.memory_reservation))
    swap = resources.memory_swap
    if swap is not None:
        if swap == -1 or resources.memory_limit in (None, -1):
            write_value(directory, "memory.swap.max", _v2_bytes(swap))
        else:
            if swap < resources.memory_limit:
                raise InvalidArgument(
                    f"linux.resources.memory.swap ({swap}) is below "
                    f"linux.resources.memory.limit ({resources.memory_limit})"
                )
            write_value(directory, "memory.swap.max", swap - resources.memory_limit)


def update_v1(directory: str, resources: Resources) -> None:
    """Write new limits to a cgroup that has some already.

    The kernel keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every
    write, so a memsw limit that grows is written before the memory limit, and one that
    shrinks after it.
    """
    swap = resources.memory_swap
    if swap is not None and (swap == -1 or swap >= _current_memsw(directory)):
        apply_v1(directory, resources.replace(memory_limit=None))
        apply_v1(directory, resources.replace(memory_swap=None))
    else:
        apply_v1(directory, resources)


def _current_memsw(directory: str) -> int:
    try:
        with open(os.path.join(directory, "memory.memsw.limit_in_bytes")) as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 0


update_v2 = apply_v2


def _v2_bytes(value: int) -> str:
    return "max" if value == -1 else str(value)
