"""``ketch update``: change the resource limits and restart policy of containers."""

from __future__ import annotations

import sys

from ketch.cli.containerflags import parse_bytes, parse_cpus, parse_int, parse_restart
from ketch.cli.errors import UsageError
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "update",
    "ketch update [OPTIONS] CONTAINER [CONTAINER...]",
    "Update configuration of one or more containers",
    (
        Flag("cpu-period", "Limit CPU CFS (Completely Fair Scheduler) period", metavar="int"),
        Flag("cpu-quota", "Limit CPU CFS (Completely Fair Scheduler) quota", metavar="int"),
        Flag("cpu-shares", "CPU shares (relative weight)", short="c", metavar="int"),
        Flag("cpus", "Number of CPUs", metavar="decimal"),
        Flag("cpuset-cpus", "CPUs in which to allow execution (0-3, 0,1)", metavar="string"),
        Flag("cpuset-mems", "MEMs in which to allow execution (0-3, 0,1)", metavar="string"),
        Flag("memory", "Memory limit", short="m", metavar="bytes"),
        Flag("memory-reservation", "Memory soft limit", metavar="bytes"),
        Flag(
            "memory-swap",
            "Swap limit equal to memory plus swap: -1 to enable unlimited swap",
            metavar="bytes",
        ),
        Flag("pids-limit", "Tune container pids limit (set -1 for unlimited)", metavar="int"),
        Flag("restart", "Restart policy to apply when a container exits", metavar="string"),
    ),
    min_args=1,
)


def update_body(options: dict) -> dict:
    """Build the ``POST /containers/{id}/update`` body; UsageError when no flag is set."""
    body: dict = {}
    for flag, field in (("memory", "Memory"), ("memory-reservation", "MemoryReservation")):
        if options[flag]:
            body[field] = parse_bytes(options[flag], f"--{flag}")
    if options["memory-swap"]:
        swap = options["memory-swap"].strip()
        body["MemorySwap"] = -1 if swap == "-1" else parse_bytes(swap, "--memory-swap")
    integers = (
        ("cpu-period", "CpuPeriod"),
        ("cpu-quota", "CpuQuota"),
        ("cpu-shares", "CpuShares"),
        ("pids-limit", "PidsLimit"),
    )
    for flag, field in integers:
        if options[flag] is not None:
            body[field] = parse_int(options[flag], f"--{flag}")
    if options["cpus"]:
        body["NanoCpus"] = parse_cpus(options["cpus"])
    for flag, field in (("cpuset-cpus", "CpusetCpus"), ("cpuset-mems", "CpusetMems")):
        if options[flag]:
            body[field] = options[flag]
    if options["restart"]:
        body["RestartPolicy"] = parse_restart(options["restart"], auto_remove=False)
    if not body:
        raise UsageError("you must provide one or more flags when using this command")
    return body


def execute(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.lifecycle import for_each

    body = update_body(options)
    client = context.client()

    def update_one(name: str) -> str:
        result = client.call("POST", f"/containers/{name}/update", body=body)
        warnings = result.get("Warnings") if isinstance(result, dict) else None
        for warning in warnings or []:
            sys.stderr.write(f"WARNING: {warning}\n")
        return name

    return for_each(args, update_one)
