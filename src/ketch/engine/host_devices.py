"""The host's device nodes as OCI ``linux.devices`` entries, for privileged containers.

A privileged container gets every block and character device of the host under /dev,
with the host's major and minor numbers, permissions and owner, and the devices cgroup
allows all of them. The walk skips what the container has its own instance of: the
/dev/pts, /dev/shm and /dev/mqueue mounts, /dev/console (the container's terminal) and
/dev/ptmx (the runtime links it to the container's devpts).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HOST_DEV = Path("/dev")

# Directories under /dev that are mounts of their own inside the container.
SKIPPED_DIRECTORIES = frozenset({"pts", "shm", "mqueue"})
# Nodes that the runtime creates for each container itself.
SKIPPED_PATHS = frozenset({"/dev/console", "/dev/ptmx"})


def host_devices(root: Path = HOST_DEV) -> list[dict[str, Any]]:
    """Return a ``linux.devices`` entry for each block or character device under ``root``.

    Entries are sorted by path. Symbolic links are not followed, and a node that
    disappears during the walk is left out.
    """
    devices = []
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        # The skipped directories are the container's own mounts only directly under /dev.
        if Path(directory) == root:
            subdirectories[:] = [name for name in subdirectories if name not in SKIPPED_DIRECTORIES]
        for name in files:
            path = Path(directory, name)
            device = _device_entry(path, Path("/dev") / path.relative_to(root))
            if device is not None:
                devices.append(device)
    return sorted(devices, key=lambda device: device["path"])


def _device_entry(path: Path, container_path: Path) -> dict[str, Any] | None:
    if str(container_path) in SKIPPED_PATHS:
        return None
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISCHR(info.st_mode):
        kind = "c"
    elif stat.S_ISBLK(info.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": str(container_path),
        "type": kind,
        "major": os.major(info.st_rdev),
        "minor": os.minor(info.st_rdev),
        "fileMode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
    }


def merge_devices(
    host: list[dict[str, Any]], explicit: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return the host's device entries and the explicit ones, one entry per container path.

    An explicit entry replaces the host's entry at its path, so that its own permissions,
    owner and numbers apply, and of two explicit entries at one path the later one stays.
    With duplicates, which node a runtime makes depends on its order of creation.
    """
    by_path = {device["path"]: device for device in host}
    for device in explicit:
        by_path[device["path"]] = device
    return list(by_path.values())
