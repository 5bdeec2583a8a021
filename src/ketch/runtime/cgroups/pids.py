"""The pids controller: linux.resources.pids.limit as pids.max (0 or less: unlimited)."""

from __future__ import annotations

from ketch.runtime.cgroups.files import write_value

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.runtime.config import Resources

CONTROLLER = "pids"


def wanted(resources: Resources) -> bool:
    return resources.pids_limit is not None


def _value(resources: Resources) -> str:
    limit = resources.pids_limit
    return "max" if limit is None or limit <= 0 else str(limit)


def apply_v1(directory: str, resources: Resources) -> None:
    write_value(directory, "pids.max", _value(resources))


def apply_v2(directory: str, resources: Resources) -> None:
    write_value(directory, "pids.max", _value(resources))


# update writes the same files as create: fields left None are skipped either way.
update_v1 = apply_v1
update_v2 = apply_v2
