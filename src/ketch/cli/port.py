"""``ketch port``: list a container's published ports, or the host addresses of one port.

The bindings come from ``NetworkSettings.Ports`` of container inspect, so the command
works against dockerd too.
"""

from __future__ import annotations

import sys

from ketch.cli.errors import UsageError
from ketch.cli.options import Command
from ketch.errors import NotFound

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "port",
    "ketch port CONTAINER [PRIVATE_PORT[/PROTO]]",
    "List port mappings or a specific mapping for the container",
    min_args=1,
    max_args=2,
)


def host_address(binding: dict) -> str:
    """Format a host binding as docker does: ``0.0.0.0:8080``, ``[::]:8080``."""
    host_ip = binding.get("HostIp") or "0.0.0.0"
    if ":" in host_ip:
        host_ip = f"[{host_ip}]"
    return f"{host_ip}:{binding.get('HostPort', '')}"


def port_key(text: str) -> str:
    """Normalize a PRIVATE_PORT[/PROTO] argument to an inspect key such as "80/tcp"."""
    port, _, protocol = text.partition("/")
    if not port.isdigit():
        raise UsageError(f'invalid port "{text}": expected PRIVATE_PORT[/PROTO], such as 80/tcp')
    return f"{int(port)}/{protocol.lower() or 'tcp'}"


def _sort_key(key: str) -> tuple[int, str]:
    port, _, protocol = key.partition("/")
    return (int(port) if port.isdigit() else 0, protocol)


def format_mappings(ports: dict, requested: str | None) -> list[str]:
    """Return the output lines for the Ports of an inspect body; raise NotFound when
    ``requested`` is not published."""
    if requested is not None:
        bindings = ports.get(requested) or []
        if not bindings:
            raise NotFound(f"No public port '{requested}' published")
        return [host_address(binding) for binding in bindings]
    lines = []
    for key in sorted(ports, key=_sort_key):
        for binding in ports[key] or []:
            lines.append(f"{key} -> {host_address(binding)}")
    return lines


def execute(context: Context, options: dict, args: list[str]) -> int:
    requested = port_key(args[1]) if len(args) > 1 else None
    container = context.client().call("GET", f"/containers/{args[0]}/json")
    ports = ((container or {}).get("NetworkSettings") or {}).get("Ports") or {}
    try:
        lines = format_mappings(ports, requested)
    except NotFound as error:
        raise NotFound(f"{error} for {args[0]}") from None
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0
