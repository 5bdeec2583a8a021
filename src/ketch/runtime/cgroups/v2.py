"""The cgroup v2 manager: one directory in the unified hierarchy.

On disk, for a caller in /user.slice/x and the default cgroups path::

    /sys/fs/cgroup/user.slice/x/ketch/        shared parent, kept on delete
    /sys/fs/cgroup/user.slice/x/ketch/<id>/   the container's cgroup

A controller works in a cgroup only when every ancestor lists it in
cgroup.subtree_control, so ``create`` enables the controllers the limits need from the
caller's cgroup down to the container's parent. That write changes the caller's own
cgroup, and the kernel rejects it (EBUSY) when the caller's cgroup contains processes and
is not the root. Such a caller must run in a cgroup made for delegation.
"""

from __future__ import annotations

import os
import posixpath

from ketch.errors import SystemFailure
from ketch.runtime.cgroups import cpu, cpuset, freezer, memory, pids
from ketch.runtime.cgroups.base import CGROUP_ROOT, CgroupManager, own_cgroups
from ketch.runtime.cgroups.files import read_pids, read_value, remove_directory, write_value
from ketch.runtime.cgroups.v1 import _make_directories
from ketch.runtime.lazylog import LazyLogger
from ketch.runtime.paths import is_within, join

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.runtime.config import Resources

log = LazyLogger(__name__)

# Limitation: device rules need an eBPF program on cgroup v2, which is not written yet, so
# linux.resources.devices is not enforced there.
_UNITS = (cpuset, cpu, memory, pids)


class V2Manager(CgroupManager):
    version = 2

    def __init__(self, directory: str, mount_point: str = CGROUP_ROOT) -> None:
        self.directory = os.fspath(directory)
        self.mount_point = os.fspath(mount_point)

    @classmethod
    def under_caller(
        cls, path: str, *, relative: bool, mount_point: str = CGROUP_ROOT
    ) -> V2Manager:
        mount_point = os.fspath(mount_point)
        caller_path = own_cgroups().get("", "/") if relative else "/"
        full = posixpath.normpath(posixpath.join(caller_path, path))
        return cls(mount_point.rstrip("/") + "/" + full.lstrip("/"), mount_point)

    @classmethod
    def from_state(cls, record: dict[str, Any]) -> V2Manager:
        return cls(str(record["directory"]), str(record["mount_point"]))

    def state(self) -> dict[str, Any]:
        return {
            "version": 2,
            "directory": str(self.directory),
            "mount_point": str(self.mount_point),
        }

    def create(self, resources: Resources) -> None:
        needed = [unit.CONTROLLER for unit in _UNITS if unit.wanted(resources)]
        available = read_value(self.mount_point, "cgroup.controllers").split()
        for controller in needed:
            if controller not in available:
                raise SystemFailure(
                    f"the config sets {controller} limits, but the cgroup v2 hierarchy at "
                    f"{self.mount_point} has no {controller} controller"
                )
        created = _make_directories(self.directory)
        try:
            self._enable_controllers(needed)
            for unit in _UNITS:
                if unit.wanted(resources):
                    unit.apply_v2(self.directory, resources)
        except BaseException:
            for level in reversed(created):
                try:
                    remove_directory(level, wait_seconds=0)
                except SystemFailure as error:
                    log.warning("cleanup after a failed cgroup create: %s", error)
            raise

    def _enable_controllers(self, needed: list[str]) -> None:
        ancestors = []
        level = os.path.dirname(self.directory)
        while is_within(level, self.mount_point):
            ancestors.append(level)
            if level == self.mount_point:
                # dirname("/") is "/", so a hierarchy mounted at "/" would loop here.
                break
            level = os.path.dirname(level)
        for ancestor in reversed(ancestors):
            enabled = read_value(ancestor, "cgroup.subtree_control").split()
            for controller in needed:
                if controller not in enabled:
                    write_value(ancestor, "cgroup.subtree_control", f"+{controller}")

    def add_process(self, pid: int) -> None:
        write_value(self.directory, "cgroup.procs", pid)

    def procs_files(self) -> list[str]:
        return [join(self.directory, "cgroup.procs")]

    def processes(self) -> list[int]:
        return read_pids(self.directory)

    def destroy(self) -> None:
        remove_directory(self.directory)

    def update(self, resources: Resources) -> None:
        needed = [unit.CONTROLLER for unit in _UNITS if unit.wanted(resources)]
        self._enable_controllers(needed)
        for unit in _UNITS:
            if unit.wanted(resources):
                unit.update_v2(self.directory, resources)

    def freeze(self) -> None:
        freezer.freeze_v2(self.directory)

    def thaw(self) -> None:
        freezer.thaw_v2(self.directory)

    def is_frozen(self) -> bool:
        return freezer.frozen_v2(self.directory)

    def bind_sources(self) -> list[tuple[str, str]]:
        return [("", self.directory)]
