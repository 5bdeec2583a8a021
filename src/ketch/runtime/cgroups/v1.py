"""The cgroup v1 manager: one directory per mounted hierarchy.

On disk, for a hierarchy mounted at /sys/fs/cgroup/memory, a caller in /process_api/x and
the default cgroups path::

    /sys/fs/cgroup/memory/process_api/x/ketch/        shared parent, kept on delete
    /sys/fs/cgroup/memory/process_api/x/ketch/<id>/   the container's cgroup

Named hierarchies without a controller (name=systemd) are left alone.
"""

from __future__ import annotations

import os
import posixpath

from ketch.errors import SystemFailure
from ketch.runtime.cgroups import cpu, cpuset, devices, freezer, memory, pids
from ketch.runtime.cgroups.base import (
    CgroupManager,
    cgroup_mounts,
    own_cgroups,
)
from ketch.runtime.cgroups.files import read_pids, remove_directories, remove_directory, write_value
from ketch.runtime.lazylog import LazyLogger
from ketch.runtime.paths import is_within, join

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.runtime.config import Resources

log = LazyLogger(__name__)

CONTROLLERS = (
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
)

# Applied in this order: cpuset first, because a cpuset must have CPUs before anything
# else happens in it.
_UNITS = (cpuset, cpu, memory, pids, devices)


class V1Manager(CgroupManager):
    version = 1

    def __init__(self, directories: dict[str, str], controllers: dict[str, list[str]]) -> None:
        # Hierarchy name (its mount point's base name, "memory" or "cpu,cpuacct") ->
        # the container's directory in it, and -> the controllers it carries.
        self.directories = {name: os.fspath(path) for name, path in directories.items()}
        self.controllers = controllers

    @classmethod
    def under_caller(cls, path: str, *, relative: bool) -> V1Manager:
        own = own_cgroups()
        directories: dict[str, str] = {}
        controllers: dict[str, list[str]] = {}
        for mount_point, mount_root, fs_type, options in cgroup_mounts():
            names = [option for option in options.split(",") if option in CONTROLLERS]
            if fs_type != "cgroup" or not names:
                continue
            name = os.path.basename(mount_point)
            if name in directories:
                continue  # the same hierarchy mounted twice
            caller_path = _caller_path(own, names)
            full = posixpath.normpath(posixpath.join(caller_path if relative else "/", path))
            if not is_within(full, mount_root):
                log.debug("skipping cgroup mount %s: %s is outside its root", mount_point, full)
                continue
            inside_mount = full[len(mount_root.rstrip("/")) :]
            directories[name] = mount_point.rstrip("/") + inside_mount
            controllers[name] = names
        return cls(directories, controllers)

    @classmethod
    def from_state(cls, record: dict[str, Any]) -> V1Manager:
        return cls(
            {name: str(path) for name, path in record["directories"].items()},
            record["controllers"],
        )

    def state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "directories": {name: str(path) for name, path in self.directories.items()},
            "controllers": self.controllers,
        }

    def create(self, resources: Resources) -> None:
        self._check_controllers(resources)
        created: list[str] = []
        try:
            for name, directory in self.directories.items():
                new_levels = _make_directories(directory)
                created.extend(new_levels)
                if "cpuset" in self.controllers[name]:
                    for level in new_levels:
                        cpuset.inherit_v1(level)
                for unit in _UNITS:
                    if unit.CONTROLLER in self.controllers[name] and unit.wanted(resources):
                        unit.apply_v1(directory, resources)
        except BaseException:
            for level in reversed(created):
                try:
                    remove_directory(level, wait_seconds=0)
                except SystemFailure as error:
                    log.warning("cleanup after a failed cgroup create: %s", error)
            raise

    def add_process(self, pid: int) -> None:
        for directory in self.directories.values():
            write_value(directory, "cgroup.procs", pid)

    def procs_files(self) -> list[str]:
        return [join(directory, "cgroup.procs") for directory in self.directories.values()]

    def processes(self) -> list[int]:
        for directory in self.directories.values():
            return read_pids(directory)
        return []

    def destroy(self) -> None:
        remove_directories(list(self.directories.values()))

    def update(self, resources: Resources) -> None:
        self._check_controllers(resources)
        for name, directory in self.directories.items():
            for unit in _UNITS:
                if unit.CONTROLLER in self.controllers[name] and unit.wanted(resources):
                    unit.update_v1(directory, resources)

    def freeze(self) -> None:
        freezer.freeze_v1(self._freezer_directory())

    def thaw(self) -> None:
        freezer.thaw_v1(self._freezer_directory())

    def is_frozen(self) -> bool:
        directory = self._directory_of(freezer.CONTROLLER)
        return directory is not None and freezer.frozen_v1(directory)

    def bind_sources(self) -> list[tuple[str, str]]:
        return list(self.directories.items())

    def _freezer_directory(self) -> str:
        directory = self._directory_of(freezer.CONTROLLER)
        if directory is None:
            raise SystemFailure(
                "cannot pause or resume: no cgroup v1 freezer controller is mounted"
            )
        return directory

    def _directory_of(self, controller: str) -> str | None:
        for name, directory in self.directories.items():
            if controller in self.controllers[name]:
                return directory
        return None

    def _check_controllers(self, resources: Resources) -> None:
        available = {c for names in self.controllers.values() for c in names}
        for unit in _UNITS:
            if unit.wanted(resources) and unit.CONTROLLER not in available:
                raise SystemFailure(
                    f"the config sets {unit.CONTROLLER} limits, but no cgroup v1 "
                    f"{unit.CONTROLLER} controller is mounted"
                )


def _caller_path(own: dict[str, str], names: list[str]) -> str:
    for controllers, path in own.items():
        if set(controllers.split(",")) == set(names):
            return path
    return "/"


def _make_directories(directory: str) -> list[str]:
    """mkdir -p, returning the directories that did not exist, top first."""
    missing = []
    level = directory
    while not os.path.exists(level):
        missing.append(level)
        level = os.path.dirname(level)
    missing.reverse()
    for level in missing:
        try:
            os.mkdir(level)
        except FileExistsError:
            pass  # another container's create made the shared parent meanwhile
        except OSError as error:
            raise SystemFailure(f"cannot create cgroup {level}: {error.strerror}") from None
    return missing
