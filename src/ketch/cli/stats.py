"""``ketch top`` and ``ketch stats``: a container's processes and resource usage.

``stats`` computes its columns from ``GET /containers/{id}/stats`` as docker does. CPU %
is the container's share of the host's CPU time between two samples, times the number
of CPUs. Memory excludes the page cache (``inactive_file`` on cgroup v2,
``total_inactive_file`` on v1). Without ``--no-stream`` the table is redrawn every
second until interrupted.
"""

from __future__ import annotations

import sys
import time

from ketch.cli.errors import ApiError, ProtocolFailure, StreamError
from ketch.cli.humanize import human_size
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.client import Client
    from ketch.cli.main import Context

STATS_TABLE = (
    "{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}"
    "\t{{.PIDs}}"
)
STATS_HEADERS = {
    "ID": "CONTAINER ID",
    "Container": "CONTAINER",
    "Name": "NAME",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}
REFRESH_SECONDS = 1.0


def top(context: Context, options: dict, args: list[str]) -> int:
    query = {"ps_args": " ".join(args[1:])} if len(args) > 1 else None
    result = context.client().call("GET", f"/containers/{args[0]}/top", query)
    if not isinstance(result, dict):
        raise ProtocolFailure(f"invalid reply to container top: {result!r}")
    from ketch.cli.formatter import tabulate

    titles = result.get("Titles") or []
    lines = ["\t".join(titles)] + ["\t".join(process) for process in result.get("Processes") or []]
    sys.stdout.write(tabulate("".join(line + "\n" for line in lines)))
    return 0


def stats(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()
    names = list(args)
    if not names:
        listing = client.call("GET", "/containers/json", {"all": "1"} if options["all"] else None)
        names = [container["Id"] for container in listing or []]
    from ketch.cli.formatter import render
    from ketch.cli.ps import HeaderRow

    no_trunc = bool(options["no-trunc"])
    if options["no-stream"]:
        samples = _sample_once(client, names)
        rows = [StatsRow(name, samples.get(name) or {}, no_trunc) for name in names]
        sys.stdout.write(render(options["format"], STATS_TABLE, HeaderRow(STATS_HEADERS), rows))
        return 0

    latest = _follow(client, names)
    terminal = sys.stdout.isatty()
    while True:
        time.sleep(REFRESH_SECONDS)
        rows = [StatsRow(name, latest.get(name) or {}, no_trunc) for name in names]
        text = render(options["format"], STATS_TABLE, HeaderRow(STATS_HEADERS), rows)
        sys.stdout.write(("\033[2J\033[H" if terminal else "") + text)
        sys.stdout.flush()


def _sample_once(client: Client, names: list[str]) -> dict[str, dict]:
    """Take one sample of each container, all at once, because the daemon measures CPU
    use between two readings before it replies to each."""
    import threading

    samples: dict[str, dict] = {}
    errors: list[ApiError] = []

    def sample(name: str) -> None:
        try:
            data = client.call("GET", f"/containers/{name}/stats", {"stream": "0"})
        except ApiError as error:
            if error.status != 404:
                errors.append(error)
            return
        if isinstance(data, dict):
            samples[name] = data

    threads = [threading.Thread(target=sample, args=(name,), daemon=True) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return samples


def _follow(client: Client, names: list[str]) -> dict[str, dict]:
    """Follow each container's stats stream in a thread; return the dict of the latest
    sample by name, which the threads keep up to date."""
    import threading

    latest: dict[str, dict] = {}

    def follow(name: str) -> None:
        try:
            response = client.open("GET", f"/containers/{name}/stats", {"stream": "1"})
            for message in response.iter_json_lines():
                latest[name] = message
        except (ApiError, OSError, ProtocolFailure, StreamError):
            # The container went away; its row keeps showing "--" and zeros, as docker's.
            latest.pop(name, None)

    for name in names:
        threading.Thread(target=follow, args=(name,), daemon=True).start()
    return latest


class StatsRow:
    """One container's stats sample with the fields of docker's ``stats`` template."""

    def __init__(self, name: str, data: dict, no_trunc: bool) -> None:
        identifier = data.get("id") or name
        self.Container = name
        self.ID = identifier if no_trunc else identifier[:12]
        self.Name = (data.get("name") or "--").lstrip("/")
        self._data = data

    @property
    def CPUPerc(self) -> str:  # noqa: N802 - the field names are docker's template names
        return f"{cpu_percent(self._data):.2f}%"

    @property
    def MemUsage(self) -> str:  # noqa: N802
        usage, limit = memory_usage(self._data)
        return f"{binary_size(usage)} / {binary_size(limit)}"

    @property
    def MemPerc(self) -> str:  # noqa: N802
        usage, limit = memory_usage(self._data)
        return f"{usage * 100 / limit:.2f}%" if limit else "0.00%"

    @property
    def NetIO(self) -> str:  # noqa: N802
        networks = (self._data.get("networks") or {}).values()
        received = sum(network.get("rx_bytes") or 0 for network in networks)
        sent = sum(network.get("tx_bytes") or 0 for network in networks)
        return f"{human_size(received)} / {human_size(sent)}"

    @property
    def BlockIO(self) -> str:  # noqa: N802
        entries = (self._data.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
        read = sum(
            entry.get("value") or 0 for entry in entries if str(entry.get("op")).lower() == "read"
        )
        written = sum(
            entry.get("value") or 0 for entry in entries if str(entry.get("op")).lower() == "write"
        )
        return f"{human_size(read)} / {human_size(written)}"

    @property
    def PIDs(self) -> str:  # noqa: N802
        return str((self._data.get("pids_stats") or {}).get("current") or 0)

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in sorted(STATS_HEADERS)}


def cpu_percent(data: dict) -> float:
    """Return CPU use as docker computes it: container delta over system delta × CPUs."""
    current = data.get("cpu_stats") or {}
    previous = data.get("precpu_stats") or {}
    container_delta = ((current.get("cpu_usage") or {}).get("total_usage") or 0) - (
        (previous.get("cpu_usage") or {}).get("total_usage") or 0
    )
    system_delta = (current.get("system_cpu_usage") or 0) - (previous.get("system_cpu_usage") or 0)
    cpus = (
        current.get("online_cpus")
        or len((current.get("cpu_usage") or {}).get("percpu_usage") or [])
        or 1
    )
    if container_delta <= 0 or system_delta <= 0:
        return 0.0
    return container_delta / system_delta * cpus * 100


def memory_usage(data: dict) -> tuple[int, int]:
    memory = data.get("memory_stats") or {}
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", 0)) or 0
    usage = max((memory.get("usage") or 0) - cache, 0)
    return usage, memory.get("limit") or 0


def binary_size(size: float) -> str:
    """Format as go-units' BytesSize (binary units, as docker's MEM USAGE): ``1.5MiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    unit = 0
    while size >= 1024 and unit < len(units) - 1:
        size /= 1024
        unit += 1
    return f"{size:.4g}{units[unit]}"


VERBS = {
    "top": (
        Command(
            "top",
            "ketch top CONTAINER [ps OPTIONS]",
            "Display the running processes of a container",
            min_args=1,
            interspersed=False,
        ),
        top,
    ),
    "stats": (
        Command(
            "stats",
            "ketch stats [OPTIONS] [CONTAINER...]",
            "Display a live stream of container(s) resource usage statistics",
            (
                Flag("all", "Show all containers (default shows just running)", short="a"),
                Flag(
                    "format",
                    "Format output using a Go template, 'table', 'table TEMPLATE' or 'json'",
                    metavar="string",
                    default="",
                ),
                Flag("no-stream", "Disable streaming stats and only pull the first result"),
                Flag("no-trunc", "Do not truncate output"),
            ),
        ),
        stats,
    ),
}
