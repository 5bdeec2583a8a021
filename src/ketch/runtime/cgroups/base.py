"""The manager interface, the choice between cgroup v1 and v2, and path resolution."""

from __future__ import annotations

import abc

from ketch.errors import InvalidArgument, SystemFailure
from ketch.runtime.paths import unescape_mountinfo

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.runtime.config import Resources

# The managers keep directories as strings, not Path objects, because importing pathlib
# (with re and enum) cost every ketch-runc create about 4 ms by -X importtime.
CGROUP_ROOT = "/sys/fs/cgroup"


class CgroupManager(abc.ABC):
    """The cgroup directories of one container in one cgroup version."""

    version: int

    @abc.abstractmethod
    def create(self, resources: Resources) -> None:
        """Make the directories and write the limits; undoes itself when it fails."""

    @abc.abstractmethod
    def add_process(self, pid: int) -> None:
        """Move ``pid`` (with its threads) into the container's cgroups."""

    @abc.abstractmethod
    def procs_files(self) -> list[str]:
        """Return the path of cgroup.procs in each of the container's cgroups."""

    @abc.abstractmethod
    def processes(self) -> list[int]:
        """Return the pids in the container's cgroup, or [] once it is gone."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Remove the container's directories once they are empty; idempotent."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """Return a JSON-serializable record for :func:`manager_from_state`."""

    @abc.abstractmethod
    def update(self, resources: Resources) -> None:
        """Write the limits ``resources`` sets (None fields are left as they are)."""

    @abc.abstractmethod
    def freeze(self) -> None:
        """Stop every process in the container's cgroup; returns once they are stopped."""

    @abc.abstractmethod
    def thaw(self) -> None:
        """Let the processes of a frozen cgroup run again."""

    @abc.abstractmethod
    def is_frozen(self) -> bool:
        """Return True while the container's cgroup is frozen."""

    @abc.abstractmethod
    def bind_sources(self) -> list[tuple[str, str]]:
        """Return (hierarchy name, directory) pairs to show inside the container."""


def resolve_cgroups_path(cgroups_path: str | None, container_id: str) -> tuple[bool, str]:
    """Return (relative to the caller's cgroup?, normalized path) for linux.cgroupsPath."""
    path = cgroups_path or f"ketch/{container_id}"
    # Empty and "." components are dropped, as pathlib drops them.
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(
            f"invalid config.json: linux.cgroupsPath: expected a path without . or .., not {path!r}"
        )
    relative = not path.startswith("/")
    normalized = "/".join(parts)
    if not normalized:
        raise InvalidArgument("invalid config.json: linux.cgroupsPath: expected a non-root path")
    return relative, normalized


def is_unified(root: str = CGROUP_ROOT) -> bool:
    """Return True when ``root`` is a cgroup v2 mount (the unified hierarchy alone)."""
    for mount_point, _root, fs_type, _options in cgroup_mounts():
        if mount_point == str(root):
            return fs_type == "cgroup2"
    return False


def manager_for(cgroups_path: str | None, container_id: str) -> CgroupManager:
    """Return the manager for this machine's hierarchy (v2 when /sys/fs/cgroup is v2)."""
    relative, path = resolve_cgroups_path(cgroups_path, container_id)
    if is_unified():
        from ketch.runtime.cgroups.v2 import V2Manager

        return V2Manager.under_caller(path, relative=relative)
    from ketch.runtime.cgroups.v1 import V1Manager

    manager = V1Manager.under_caller(path, relative=relative)
    if not manager.directories:
        raise SystemFailure("no cgroup v1 controller and no cgroup v2 hierarchy is mounted")
    return manager


def manager_from_state(record: dict[str, Any]) -> CgroupManager:
    if record.get("version") == 2:
        from ketch.runtime.cgroups.v2 import V2Manager

        return V2Manager.from_state(record)
    from ketch.runtime.cgroups.v1 import V1Manager

    return V1Manager.from_state(record)


def cgroup_mounts() -> list[tuple[str, str, str, str]]:
    """Return (mount point, mount root, fs type, super options) of every cgroup mount."""
    result = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            before, _, after = line.partition(" - ")
            fields = before.split()
            fs_type, _source, super_options = after.split()[:3]
            if fs_type in ("cgroup", "cgroup2"):
                mount_point = unescape_mountinfo(fields[4])
                root = unescape_mountinfo(fields[3])
                result.append((mount_point, root, fs_type, super_options))
    return result


def own_cgroups(pid: int | str = "self") -> dict[str, str]:
    """Return /proc/<pid>/cgroup as {controller list ("" for v2): path}."""
    result = {}
    with open(f"/proc/{pid}/cgroup") as cgroup:
        for line in cgroup:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            result[controllers] = path
    return result
