"""Cgroups that tests and the daemons they start make below the test process's own cgroup.

Every hierarchy counts: the v1 controllers, the named ``name=systemd`` hierarchy and the
cgroup2 mount at /sys/fs/cgroup/unified, because dockerd makes its cgroup parent in all of them.
"""

from __future__ import annotations

import os
from pathlib import Path


def own_cgroup_directories(relative: str) -> list[Path]:
    """Return ``relative`` below this process's cgroup in every hierarchy where it exists."""
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, own_path = line.split(":", 2)
        if controllers == "":
            mount = Path("/sys/fs/cgroup/unified")
        elif controllers.startswith("name="):
            mount = Path("/sys/fs/cgroup") / controllers.removeprefix("name=")
        else:
            mount = Path("/sys/fs/cgroup") / controllers.split(",")[0]
        candidate = mount / own_path.lstrip("/") / relative
        if candidate.is_dir():
            found.append(candidate)
    return found


def remove_cgroup_trees(relative: str) -> None:
    for directory in own_cgroup_directories(relative):
        for parent, _, _ in sorted(os.walk(directory), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(parent)
            except OSError:
                pass
