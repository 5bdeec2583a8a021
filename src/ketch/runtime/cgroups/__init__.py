"""Container cgroups: one manager interface over the cgroup v1 and v2 hierarchies.

A manager owns the cgroup directories of one container. The runtime calls ``create``
to make them with the config's limits and ``add_process`` to put the container's init
in them, or opens the ``procs_files`` for the init to join by itself. It calls
``processes`` for ``kill --all`` and to wait until the cgroup is empty, and ``destroy``
on delete. ``state`` returns what :func:`manager_from_state` needs to rebuild the
manager in a later ``ketch-runc`` process.

Where the directories go: a relative ``linux.cgroupsPath`` (the engine uses
``ketch/<container id>``), or none, which means ``ketch/<container id>``, is created under
the calling process's own cgroup in each hierarchy, so that containers stay inside the
cgroup of whoever runs the runtime. An absolute path is taken from the hierarchy's root,
as the OCI runtime spec says.

Each controller is one small module (memory, pids, cpu, cpuset, devices) with an
``apply_v1`` and an ``apply_v2``; the managers in :mod:`.v1` and :mod:`.v2` decide where
the files are.
"""

from __future__ import annotations

# False at run time, so that this module does not import typing. Type checkers take the
# branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ketch.runtime.cgroups.base import (
        CgroupManager,
        manager_for,
        manager_from_state,
        resolve_cgroups_path,
    )

__all__ = ["CgroupManager", "manager_for", "manager_from_state", "resolve_cgroups_path"]


def directories_from_state(record: dict[str, Any]) -> list[str]:
    """Return the cgroup directories a manager's :meth:`state` record lists, v1 or v2.

    ``delete`` of a stopped container needs only these, so it skips building the manager
    (and importing pathlib) when they are already empty.
    """
    if record.get("version") == 2:
        return [record["directory"]]
    return list(record["directories"].values())


def __getattr__(name: str) -> Any:
    # The names come from .base on first use, so that ``ketch-runc state``, which imports
    # only .freezer, does not pay for .base and pathlib.
    if name in __all__:
        from ketch.runtime.cgroups import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
