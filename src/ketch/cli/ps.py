"""``ketch ps``: list containers in docker's table."""

from __future__ import annotations

import json
import sys
import time

from ketch.cli.humanize import format_table, human_duration, truncate
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "ps",
    "ketch ps [OPTIONS]",
    "List containers",
    (
        Flag("all", "Show all containers (default shows just running)", short="a"),
        Flag("no-trunc", "Don't truncate output"),
        Flag("quiet", "Only display container IDs", short="q"),
    ),
    max_args=0,
)

HEADER = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
SHORT_ID_LENGTH = 12
COMMAND_WIDTH = 20


def execute(context: Context, options: dict, args: list[str]) -> int:
    query = {"all": "1"} if options["all"] else None
    containers = context.client().call("GET", "/containers/json", query)
    if not isinstance(containers, list):
        from ketch.cli.errors import ProtocolFailure

        raise ProtocolFailure(f"invalid reply to container list: {containers!r}")
    truncated = not options["no-trunc"]
    if options["quiet"]:
        for container in containers:
            sys.stdout.write(short_id(container["Id"], truncated) + "\n")
        return 0
    now = time.time()
    rows = [table_row(container, now, truncated) for container in containers]
    sys.stdout.write(format_table(HEADER, rows))
    return 0


def short_id(identifier: str, truncated: bool = True) -> str:
    identifier = identifier.removeprefix("sha256:")
    return identifier[:SHORT_ID_LENGTH] if truncated else identifier


def table_row(container: dict, now: float, truncated: bool = True) -> list[str]:
    """Format one ``GET /containers/json`` item as a ``ketch ps`` row."""
    command = container.get("Command") or ""
    if truncated:
        command = truncate(command, COMMAND_WIDTH)
    image = container.get("Image") or ""
    if image.startswith("sha256:"):
        image = short_id(image, truncated)
    created = container.get("Created") or 0
    names = ",".join(name.lstrip("/") for name in container.get("Names") or [])
    return [
        short_id(container["Id"], truncated),
        image,
        # Quoted with escapes, as Go's strconv.Quote does in docker's table.
        json.dumps(command, ensure_ascii=False),
        f"{human_duration(now - created)} ago",
        container.get("Status") or "",
        format_ports(container.get("Ports") or []),
        names,
    ]


def format_ports(ports: list[dict]) -> str:
    """Format port mappings: ``0.0.0.0:8080->80/tcp`` when published, else ``80/tcp``."""
    formatted = []
    for port in ports:
        private = f"{port.get('PrivatePort')}/{port.get('Type', 'tcp')}"
        if port.get("PublicPort"):
            formatted.append(f"{port.get('IP') or '0.0.0.0'}:{port['PublicPort']}->{private}")
        else:
            formatted.append(private)
    return ", ".join(formatted)
