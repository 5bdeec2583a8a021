"""Container statistics and process lists from the kernel: ``/containers/{id}/stats`` and
``/containers/{id}/top``.

A container's cgroups are found through its init: ``/proc/<pid>/cgroup`` names each
controller's path, under ``/sys/fs/cgroup/<controller>`` on the v1 hierarchy or
``/sys/fs/cgroup`` on a unified (v2) one. A stats sample is the Engine API's stats
object built from those files:

- ``cpu_stats``: cpuacct.usage, usage_percpu and cpuacct.stat (v1), or cpu.stat's
  usage_usec, user_usec and system_usec (v2); with ``system_cpu_usage`` from /proc/stat
  and the throttling counters of cpu.stat;
- ``memory_stats``: memory.usage_in_bytes, max_usage, limit and memory.stat (v1), or
  memory.current, memory.peak, memory.max and memory.stat (v2);
- ``pids_stats``: pids.current and pids.max;
- ``blkio_stats``: blkio.throttle.io_service_bytes (v1) or io.stat (v2);
- ``networks``: the counters of each interface but ``lo`` in the init's
  ``/proc/<pid>/net/dev``, left out in host mode and when there is no such interface.

Clients compute the CPU percentage from two samples (``cpu_stats`` and
``precpu_stats``), so a streamed sample carries the one before it, and a single sample
that is not ``one-shot`` is taken one second after a first one, as dockerd does.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from ketch.engine import timestamps
from ketch.engine.store import Container
from ketch.errors import Conflict, InvalidArgument, SystemFailure

CGROUP_ROOT = Path("/sys/fs/cgroup")
NANOSECONDS = 1_000_000_000
SAMPLE_INTERVAL_SECONDS = 1.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_UNLIMITED = 1 << 62  # memory limits at or above this mean "no limit" on v1


def cgroup_directories(pid: int) -> dict[str, Path]:
    """Return the cgroup directory of process ``pid`` for each controller ("" on v2)."""
    directories: dict[str, Path] = {}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except FileNotFoundError:
        raise Conflict(f"the process {pid} of the container is gone") from None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if not controllers:
            directories[""] = CGROUP_ROOT / relative
            continue
        for controller in controllers.split(","):
            directory = CGROUP_ROOT / controller / relative
            if directory.is_dir():
                directories[controller] = directory
    return directories


def _read_int(path: Path, default: int = 0) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return default
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def _read_pairs(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return values
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


def system_cpu_usage() -> int:
    """Return the host's total CPU time in nanoseconds, from the cpu line of /proc/stat."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:8]
    return sum(int(value) for value in fields) * NANOSECONDS // _CLOCK_TICKS


def _online_cpus() -> int:
    return len(os.sched_getaffinity(0)) or (os.cpu_count() or 1)


def _cpu_v1(directories: dict[str, Path]) -> dict[str, Any]:
    cpuacct = directories.get("cpuacct", directories.get("cpu"))
    usage = _read_int(cpuacct / "cpuacct.usage") if cpuacct else 0
    percpu: list[int] = []
    kernel = user = 0
    if cpuacct:
        try:
            percpu = [int(v) for v in (cpuacct / "cpuacct.usage_percpu").read_text().split()]
        except (OSError, ValueError):
            percpu = []
        ticks = _read_pairs(cpuacct / "cpuacct.stat")
        kernel = ticks.get("system", 0) * NANOSECONDS // _CLOCK_TICKS
        user = ticks.get("user", 0) * NANOSECONDS // _CLOCK_TICKS
    cpu = directories.get("cpu")
    throttling = _read_pairs(cpu / "cpu.stat") if cpu else {}
    return {
        "cpu_usage": {
            "total_usage": usage,
            "percpu_usage": percpu,
            "usage_in_kernelmode": kernel,
            "usage_in_usermode": user,
        },
        "throttling_data": {
            "periods": throttling.get("nr_periods", 0),
            "throttled_periods": throttling.get("nr_throttled", 0),
            "throttled_time": throttling.get("throttled_time", 0),
        },
    }


def _cpu_v2(directory: Path) -> dict[str, Any]:
    stat = _read_pairs(directory / "cpu.stat")
    return {
        "cpu_usage": {
            "total_usage": stat.get("usage_usec", 0) * 1000,
            "usage_in_kernelmode": stat.get("system_usec", 0) * 1000,
            "usage_in_usermode": stat.get("user_usec", 0) * 1000,
        },
        "throttling_data": {
            "periods": stat.get("nr_periods", 0),
            "throttled_periods": stat.get("nr_throttled", 0),
            "throttled_time": stat.get("throttled_usec", 0) * 1000,
        },
    }


def _memory(directories: dict[str, Path]) -> dict[str, Any]:
    memory = directories.get("memory")
    if memory is not None:
        limit = _read_int(memory / "memory.limit_in_bytes")
        return {
            "usage": _read_int(memory / "memory.usage_in_bytes"),
            "max_usage": _read_int(memory / "memory.max_usage_in_bytes"),
            "stats": _read_pairs(memory / "memory.stat"),
            "limit": limit if 0 < limit < _UNLIMITED else _host_memory(),
        }
    unified = directories.get("")
    if unified is None:
        return {}
    limit = _read_int(unified / "memory.max")
    return {
        "usage": _read_int(unified / "memory.current"),
        "max_usage": _read_int(unified / "memory.peak"),
        "stats": _read_pairs(unified / "memory.stat"),
        "limit": limit or _host_memory(),
    }


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _pids(directories: dict[str, Path]) -> dict[str, Any]:
    directory = directories.get("pids", directories.get(""))
    if directory is None:
        return {}
    current = _read_int(directory / "pids.current")
    limit = _read_int(directory / "pids.max")
    return {"current": current, **({"limit": limit} if limit else {})}


def _blkio(directories: dict[str, Path]) -> dict[str, Any]:
    entries = []
    blkio = directories.get("blkio")
    if blkio is not None:
        try:
            lines = (blkio / "blkio.throttle.io_service_bytes").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and ":" in parts[0]:
                major, minor = parts[0].split(":")
                entries.append(
                    {
                        "major": int(major),
                        "minor": int(minor),
                        "op": parts[1],
                        "value": int(parts[2]),
                    }
                )
    return {
        "io_service_bytes_recursive": entries or None,
        "io_serviced_recursive": None,
        "io_queue_recursive": None,
        "io_service_time_recursive": None,
        "io_wait_time_recursive": None,
        "io_merged_recursive": None,
        "io_time_recursive": None,
        "sectors_recursive": None,
    }


# The columns of /proc/<pid>/net/dev after the interface name that the Engine API reports.
_NET_DEV_FIELDS = {
    0: "rx_bytes",
    1: "rx_packets",
    2: "rx_errors",
    3: "rx_dropped",
    8: "tx_bytes",
    9: "tx_packets",
    10: "tx_errors",
    11: "tx_dropped",
}


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """Return the counters of each interface but ``lo`` in a /proc/net/dev text."""
    interfaces = {}
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        name = name.strip()
        values = counters.split()
        if name == "lo" or len(values) < 12:
            continue
        interfaces[name] = {key: int(values[index]) for index, key in _NET_DEV_FIELDS.items()}
    return interfaces


def _networks(container: Container) -> dict[str, dict[str, int]]:
    if container.host_config.get("NetworkMode") == "host":
        return {}  # the host's interfaces are not the container's, as dockerd reports it
    try:
        text = Path(f"/proc/{container.state.pid}/net/dev").read_text()
    except OSError:
        return {}  # the init exited since the cgroups were read
    return parse_net_dev(text)


def sample(container: Container) -> dict[str, Any]:
    """Return one stats object of a running container (precpu_stats left empty)."""
    directories = cgroup_directories(container.state.pid)
    if "cpuacct" in directories or "cpu" in directories:
        cpu = _cpu_v1(directories)
    elif "" in directories:
        cpu = _cpu_v2(directories[""])
    else:
        raise SystemFailure(f"no CPU cgroup found for container {container.id}")
    cpu["system_cpu_usage"] = system_cpu_usage()
    cpu["online_cpus"] = _online_cpus()
    stats: dict[str, Any] = {
        "read": timestamps.now(),
        "preread": timestamps.ZERO_TIME,
        "pids_stats": _pids(directories),
        "blkio_stats": _blkio(directories),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu,
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": _memory(directories),
        "name": container.name,
        "id": container.id,
    }
    networks = _networks(container)
    if networks:
        stats["networks"] = networks
    return stats


def empty_sample(container: Container) -> dict[str, Any]:
    """Return the stats object dockerd sends for a container that is not running."""
    return {
        "read": timestamps.ZERO_TIME,
        "preread": timestamps.ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": _blkio({}),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": {},
        "name": container.name,
        "id": container.id,
    }


async def stream_samples(container: Container, stream: bool, one_shot: bool):  # type: ignore[no-untyped-def]
    """Yield stats objects: every second while ``stream``, else one."""
    if not container.running:
        yield empty_sample(container)
        return
    previous = sample(container)
    if not stream and one_shot:
        yield previous
        return
    while True:
        await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
        if not container.running:
            if stream:
                yield empty_sample(container)
            return
        current = sample(container)
        current["precpu_stats"] = previous["cpu_stats"]
        current["preread"] = previous["read"]
        yield current
        if not stream:
            return
        previous = current


async def top(pids: list[int], ps_args: str) -> dict[str, Any]:
    """Run the host's ``ps`` with ``ps_args`` (default -ef) and keep the container's rows."""
    arguments = ps_args.split() if ps_args.strip() else ["-ef"]
    try:
        process = await asyncio.create_subprocess_exec(
            "ps", *arguments,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except FileNotFoundError:
        raise SystemFailure("cannot list processes: ps is not installed on the host") from None
    output, errors = await process.communicate()
    if process.returncode != 0:
        raise InvalidArgument(f"ps {' '.join(arguments)} failed: {errors.decode().strip()}")
    lines = output.decode(errors="replace").splitlines()
    titles = lines[0].split() if lines else []
    if "PID" not in titles:
        raise InvalidArgument(f"Couldn't find PID field in ps output of ps {' '.join(arguments)}")
    column = titles.index("PID")
    wanted = set(pids)
    processes = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > column and fields[column].isdigit() and int(fields[column]) in wanted:
            processes.append(fields)
    return {"Titles": titles, "Processes": processes}
