"""The cpu controller: shares, quota and period from linux.resources.cpu.

cgroup v1 takes them as cpu.shares, cpu.cfs_quota_us and cpu.cfs_period_us. cgroup v2
takes a weight from 1 to 10000 (cpu.weight) and "QUOTA PERIOD" in cpu.max; shares map to
weight linearly, from the v1 range 2..262144 onto 1..10000, as runc and crun map them.
"""

from __future__ import annotations

from ketch.runtime.cgroups.files import write_value

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ketch.runtime.config import Resources

CONTROLLER = "cpu"
DEFAULT_PERIOD = 100_000


def wanted(resources: Resources) -> bool:
    return any(
        value is not None
        for value in (resources.cpu_shares, resources.cpu_quota, resources.cpu_period)
    )


def apply_v1(directory: str, resources: Resources) -> None:
    if resources.cpu_shares is not None:
        write_value(directory, "cpu.shares", resources.cpu_shares)
    # The period first: the kernel checks the quota against the current period.
    if resources.cpu_period is not None:
        write_value(directory, "cpu.cfs_period_us", resources.cpu_period)
    if resources.cpu_quota is not None:
        write_value(directory, "cpu.cfs_quota_us", resources.cpu_quota)


def apply_v2(directory: str, resources: Resources) -> None:
    if resources.cpu_shares is not None:
        write_value(directory, "cpu.weight", shares_to_weight(resources.cpu_shares))
    if resources.cpu_quota is not None or resources.cpu_period is not None:
        quota = resources.cpu_quota
        quota_text = "max" if quota is None or quota == -1 else str(quota)
        write_value(directory, "cpu.max", f"{quota_text} {resources.cpu_period or DEFAULT_PERIOD}")


def shares_to_weight(shares: int) -> int:
    return 1 + ((shares - 2) * 9999) // 262142


# update writes the same files as create: fields left None are skipped either way.
update_v1 = apply_v1
update_v2 = apply_v2
