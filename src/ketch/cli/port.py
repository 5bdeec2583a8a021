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
    if not _is_decimal(port):
        raise UsageError(f'invalid port "{text}": expected PRIVATE_PORT[/PROTO], such as 80/tcp')
    return f"{int(port)}/{protocol.lower() or 'tcp'}"


def _sort_key(key: str) -> tuple[int, str]:
    port, _, protocol = key.partition("/")
    return (int(port) if _is_decimal(port) else 0, protocol)


def _is_decimal(text: str) -> bool:
    # str.isdigit alone accepts digits of other scripts and superscripts, which int() may reject.
    return text.isascii() and text.isdigit()


def format_mappings(ports: dict, requested: str | None) -> list[str]:
    """Return the output lines for the Ports of an inspect body.

    Raise NotFound when ``requested`` is not published.
    """
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


def _port_range(text: str, name: str) -> tuple[int, int]:
    low_text, dash, high_text = text.partition("-")
    valid = _is_decimal(low_text) and (_is_decimal(high_text) if dash else True)
    low = int(low_text) if valid else 0
    high = int(high_text) if valid and dash else low
    if not valid or not 0 < low <= high <= 65535:
        raise ValueError(f"invalid {name} {text!r}: expected a port or a range such as 8000-8010")
    return low, high


def _split_publish(spec: str) -> tuple[str, str, str]:
    """Split IP:HOST:CONTAINER, HOST:CONTAINER or CONTAINER. An IPv6 IP may be bracketed."""
    host_ip = ""
    if spec.startswith("["):
        end = spec.find("]:")
        if end < 0:
            raise ValueError("invalid IPv6 address: expected [ADDRESS]:HOST_PORT:CONTAINER_PORT")
        host_ip, spec = spec[1:end], spec[end + 2 :]
    parts = spec.split(":")
    if len(parts) == 3 and not host_ip:
        return parts[0], parts[1], parts[2]
    if len(parts) > 3 and not host_ip:
        # For an IPv6 address without brackets, docker's go-connections (nat.ParsePortSpec)
        # takes all parts but the last two as the address, and so does this.
        return _checked_ip(":".join(parts[:-2])), parts[-2], parts[-1]
    if len(parts) == 2:
        return host_ip, parts[0], parts[1]
    if len(parts) == 1 and not host_ip:
        return "", "", parts[0]
    raise ValueError("expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]")


def _checked_ip(text: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"invalid IP address {text!r}: expected an IPv4 or IPv6 address") from None
    return text


def publish_bindings(value: str) -> list[tuple[str, dict[str, str]]]:
    """Expand one ``-p`` value into (port key, host binding) pairs, as the docker CLI does.

    ``8000-8001:80-81`` binds each container port to its own host port, while
    ``8000-8010:80`` binds port 80 to the first free host port of the range. Raises
    ValueError that names the invalid part.
    """
    spec, _, protocol = value.partition("/")
    protocol = protocol.lower() or "tcp"
    if protocol == "sctp":
        # docker publishes SCTP ports too, but ketch's port proxy and dnat rules do not.
        raise ValueError(
            f"invalid protocol {protocol!r}: SCTP is not supported by ketch; use tcp or udp"
        )
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"invalid protocol {protocol!r}: expected tcp or udp")
    host_ip, host_part, container_part = _split_publish(spec)
    container_low, container_high = _port_range(container_part, "container port")
    count = container_high - container_low + 1
    host_ports = [host_part] * count
    if host_part:
        host_low, host_high = _port_range(host_part, "host port")
        if host_high - host_low + 1 == count:
            host_ports = [str(host_low + offset) for offset in range(count)]
        elif count != 1:
            raise ValueError(
                f"invalid ranges for container and host ports: {container_part} and {host_part}"
            )
    return [
        (f"{container_low + offset}/{protocol}", {"HostIp": host_ip, "HostPort": host_port})
        for offset, host_port in enumerate(host_ports)
    ]


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
