"""The CPUs and memory nodes that a container's cpuset may name, checked at create.

Container cgroups are made below the cgroup of ketchd, so a container's ``CpusetCpus``
and ``CpusetMems`` must be subsets of that cgroup's effective cpuset. dockerd checks the
same at create and update, so a request for a CPU the host lacks fails with 400 there,
not with a cgroup write error at start.
"""

from __future__ import annotations

import os
from pathlib import Path

from ketch.errors import InvalidArgument

# The file of a cgroup's effective set, by cgroup version, for "cpus" and "mems".
_V1_FILES = {"cpus": "cpuset.effective_cpus", "mems": "cpuset.effective_mems"}
_V2_FILES = {"cpus": "cpuset.cpus.effective", "mems": "cpuset.mems.effective"}

# The kernel's list of online NUMA nodes, read when no cpuset controller is available.
_ONLINE_NODES = Path("/sys/devices/system/node/online")


def parse_cpu_ranges(text: str) -> list[tuple[int, int]]:
    """Parse a kernel CPU or node list such as ``0-2,4`` into (first, last) pairs."""
    ranges = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        start = int(first)
        end = int(last) if last else start
        if end < start:
            raise ValueError(f"invalid range {part!r}: the end is below the start")
        ranges.append((start, end))
    return ranges


def parse_cpu_list(text: str) -> set[int]:
    """Parse a kernel CPU or node list such as ``0-2,4`` into its numbers."""
    numbers: set[int] = set()
    for start, end in parse_cpu_ranges(text):
        numbers.update(range(start, end + 1))
    return numbers


def available_list(kind: str) -> str:
    """Return the effective ``cpus`` or ``mems`` list of ketchd's cgroup, such as "0-1"."""
    # Imported here so that only a container with a cpuset brings ketch.engine.stats in.
    from ketch.engine.stats import cgroup_directories

    directories = cgroup_directories(os.getpid())
    candidates = []
    if "cpuset" in directories:
        candidates.append(directories["cpuset"] / _V1_FILES[kind])
    if "" in directories:
        candidates.append(directories[""] / _V2_FILES[kind])
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return _fallback_list(kind)


def _fallback_list(kind: str) -> str:
    """Return the set without a cpuset controller: the CPUs ketchd may run on, or the
    online NUMA nodes."""
    if kind == "cpus":
        return ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
    try:
        return _ONLINE_NODES.read_text().strip() or "0"
    except OSError:
        return "0"


def check_cpuset(cpus: str, mems: str) -> None:
    """Raise InvalidArgument, in dockerd's wording, when ``cpus`` or ``mems`` names a
    CPU or memory node outside the available set."""
    if cpus:
        available = available_list("cpus")
        if not _is_subset(cpus, available, "CpusetCpus"):
            raise InvalidArgument(
                f"Requested CPUs are not available - requested {cpus}, available: {available}"
            )
    if mems:
        available = available_list("mems")
        if not _is_subset(mems, available, "CpusetMems"):
            raise InvalidArgument(
                "Requested memory nodes are not available - "
                f"requested {mems}, available: {available}"
            )


def _is_subset(requested: str, available: str, field: str) -> bool:
    try:
        ranges = parse_cpu_ranges(requested)
    except ValueError as error:
        raise InvalidArgument(f"invalid {field} {requested!r}: {error}") from None

    # A range is compared by its end first, so that a request such as 0-4294967295 is
    # rejected without building a set of its numbers.
    allowed = parse_cpu_list(available)
    top = max(allowed, default=-1)
    return all(end <= top and allowed.issuperset(range(start, end + 1)) for start, end in ranges)
