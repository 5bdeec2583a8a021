"""The cpuset controller: linux.resources.cpu.cpus and .mems.

A new cgroup v1 cpuset starts with empty cpuset.cpus and cpuset.mems, and no process can
join it until both are set, so every level the runtime creates first copies its parent's
values (:func:`inherit_v1`). cgroup v2 starts a new cpuset with its parent's effective
values, so it needs no copy.
"""

from __future__ import annotations

import os

from ketch.runtime.cgroups.files import read_value, write_value

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.runtime.config import Resources

CONTROLLER = "cpuset"


def wanted(resources: Resources) -> bool:
    return resources.cpuset_cpus is not None or resources.cpuset_mems is not None


def inherit_v1(directory: str) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not read_value(directory, name):
            write_value(directory, name, read_value(os.path.dirname(directory), name))


def apply_v1(directory: str, resources: Resources) -> None:
    if resources.cpuset_cpus is not None:
        write_value(directory, "cpuset.cpus", resources.cpuset_cpus)
    if resources.cpuset_mems is not None:
        write_value(directory, "cpuset.mems", resources.cpuset_mems)


def apply_v2(directory: str, resources: Resources) -> None:
    apply_v1(directory, resources)


# update writes the same files as create: fields left None are skipped either way.
update_v1 = apply_v1
update_v2 = apply_v2
