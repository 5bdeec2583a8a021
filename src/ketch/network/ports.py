"""Published ports: checking a container's port options and binding its host ports.

A create body names ports in three places, which ``requested_bindings`` turns into one
list of ``PortRequest``::

    Config.ExposedPorts          {"80/tcp": {}}                  exposed only
    HostConfig.PortBindings      {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    HostConfig.PublishAllPorts   true: every exposed port without a binding gets an
                                 ephemeral host port on all addresses

A ``HostPort`` is a port, a range ("8000-8010": the first free port in it) or empty (an
ephemeral port from ``/proc/sys/net/ipv4/ip_local_port_range``). ``PortBinder`` binds the
host sockets at start. It keeps the ports that ketch itself holds, so a second container
asking for one gets docker's "port is already allocated" error before any bind is tried.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import json
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ketch.errors import Conflict, InvalidArgument, SystemFailure

logger = logging.getLogger(__name__)

PROTOCOLS = ("tcp", "udp")
ALL_IPV4 = "0.0.0.0"
EPHEMERAL_RANGE_PATH = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default ip_local_port_range, used when the file cannot be read.
DEFAULT_EPHEMERAL_RANGE = (32768, 60999)
LISTEN_BACKLOG = 512


@dataclass(frozen=True)
class PortRequest:
    """One host binding that a container requests; ``host_low == 0`` means ephemeral."""

    container_port: int
    protocol: str
    host_ip: str
    host_low: int = 0
    host_high: int = 0
    # An empty HostIp: "::" is bound too, on the same port, where the host has IPv6.
    also_ipv6: bool = False

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class BoundPort:
    """A host port that ketch has bound for a container's port."""

    container_port: int
    protocol: str
    host_ip: str
    host_port: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"


def _quoted(value: str) -> str:
    # Go's %q, which docker's messages use, matches JSON's quoting for these strings.
    return json.dumps(value)


def parse_port_key(key: str) -> tuple[int, str]:
    """Parse an ExposedPorts or PortBindings key ("80/tcp", "53/udp", "80") into a port and
    a protocol."""
    port_text, _, protocol = key.partition("/")
    protocol = protocol.lower() or "tcp"
    port = _parse_port_number(port_text)
    if port is None or port == 0:
        raise InvalidArgument(f"invalid port specification: {_quoted(port_text)}")
    if protocol not in PROTOCOLS:
        raise InvalidArgument(
            f"invalid port specification: {_quoted(key)}: protocol {protocol!r} is not "
            f"supported; expected {' or '.join(PROTOCOLS)}"
        )
    return port, protocol


def _parse_port_number(text: str) -> int | None:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        return None
    return int(text)


def parse_host_port(text: str) -> tuple[int, int]:
    """Parse a HostPort: "" gives (0, 0), "8080" gives (8080, 8080) and "8000-8010" gives
    (8000, 8010)."""
    if text == "":
        return 0, 0
    low_text, dash, high_text = text.partition("-")
    low = _parse_port_number(low_text)
    high = _parse_port_number(high_text) if dash else low
    if low is None or high is None or low > high or (low == 0 and high != 0):
        raise InvalidArgument(f"invalid port specification: {_quoted(text)}")
    return low, high


def parse_host_ip(text: str) -> str:
    """Check a HostIp and return it in normal form; "" means all IPv4 addresses (and
    ``PortRequest.also_ipv6``)."""
    if text == "":
        return ALL_IPV4
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise InvalidArgument(
            f"invalid host IP address {_quoted(text)} in HostConfig.PortBindings: expected an "
            "IPv4 or IPv6 address"
        ) from None


def _bindings_of(key: str, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidArgument(
            f"invalid create body: HostConfig.PortBindings[{_quoted(key)}] must be a list of "
            '{"HostIp": ..., "HostPort": ...} objects'
        )
    return value


def _string_field(binding: dict[str, Any], name: str, key: str) -> str:
    value = binding.get(name) or ""
    if not isinstance(value, str):
        raise InvalidArgument(
            f"invalid create body: HostConfig.PortBindings[{_quoted(key)}].{name} must be a "
            f"string, not {value!r}"
        )
    return value


def exposed_port_keys(exposed_ports: Any) -> list[str]:
    """Check Config.ExposedPorts and return its keys in normal form ("80/tcp")."""
    if exposed_ports is None:
        return []
    if not isinstance(exposed_ports, dict):
        raise InvalidArgument("invalid create body: ExposedPorts must be an object")
    keys = []
    for key in exposed_ports:
        port, protocol = parse_port_key(key)
        keys.append(f"{port}/{protocol}")
    return keys


def requested_bindings(host_config: dict[str, Any], exposed_ports: Any) -> list[PortRequest]:
    """Check HostConfig.PortBindings and PublishAllPorts; return the requested host bindings.

    Raises InvalidArgument with docker's message for a bad port, host port or address.
    """
    port_bindings = host_config.get("PortBindings") or {}
    if not isinstance(port_bindings, dict):
        raise InvalidArgument("invalid create body: HostConfig.PortBindings must be an object")
    publish_all = host_config.get("PublishAllPorts") or False
    if not isinstance(publish_all, bool):
        raise InvalidArgument("invalid create body: HostConfig.PublishAllPorts must be a boolean")

    requests: list[PortRequest] = []
    bound_keys: set[str] = set()
    for key, value in port_bindings.items():
        port, protocol = parse_port_key(key)
        for binding in _bindings_of(key, value):
            low, high = parse_host_port(_string_field(binding, "HostPort", key))
            host_text = _string_field(binding, "HostIp", key)
            host_ip = parse_host_ip(host_text)
            requests.append(PortRequest(port, protocol, host_ip, low, high, host_text == ""))
            bound_keys.add(f"{port}/{protocol}")
    if publish_all:
        for key in exposed_port_keys(exposed_ports):
            if key not in bound_keys:
                port, protocol = parse_port_key(key)
                requests.append(PortRequest(port, protocol, ALL_IPV4, also_ipv6=True))
    return requests


def check_network_mode(
    network_mode: str, host_config: dict[str, Any], exposed_ports: Any
) -> list[str]:
    """Check port options against the network mode, with docker's messages, and return
    the create warnings.

    A ``container:<id>`` container shares another container's network namespace, so it
    can neither expose nor publish ports (InvalidArgument). In ``host`` mode published
    ports are ignored, with a warning, because the container uses the host's ports.
    """
    publishes = bool(host_config.get("PortBindings")) or bool(host_config.get("PublishAllPorts"))
    if network_mode.startswith("container:"):
        # Publishing is checked first, as dockerd does, since -p also exposes the port.
        if publishes:
            raise InvalidArgument(
                "conflicting options: port publishing and the container type network mode"
            )
        if exposed_ports:
            raise InvalidArgument(
                "conflicting options: port exposing and the container type network mode"
            )
    if network_mode == "host" and publishes:
        return ["Published ports are discarded when using host network mode"]
    return []


def ephemeral_range(path: Path = EPHEMERAL_RANGE_PATH) -> tuple[int, int]:
    """Return the kernel's range of local ports for ephemeral use, as docker uses it."""
    try:
        low_text, high_text = path.read_text().split()
        low, high = int(low_text), int(high_text)
    except (OSError, ValueError) as error:
        logger.warning("cannot read %s (%s); using %s", path, error, DEFAULT_EPHEMERAL_RANGE)
        return DEFAULT_EPHEMERAL_RANGE
    if not 0 < low <= high <= 65535:
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def open_host_socket(protocol: str, host_ip: str, port: int) -> socket.socket:
    """Bind a non-blocking host socket; for TCP it is listening. Raises OSError."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        if protocol == "tcp":
            # Lets a restart bind the port again while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "::" then takes only IPv6, so that it does not clash with a 0.0.0.0 binding.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host_ip, port))
        if protocol == "tcp":
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _overlaps(first_ip: str, second_ip: str) -> bool:
    wildcards = (ALL_IPV4, "::")
    if first_ip == second_ip:
        return True
    family_of = {ALL_IPV4: 4, "::": 6}
    if first_ip in wildcards:
        return ipaddress.ip_address(second_ip).version == family_of[first_ip]
    if second_ip in wildcards:
        return ipaddress.ip_address(first_ip).version == family_of[second_ip]
    return False


class PortBinder:
    """Host sockets for published ports, and the ports that ketch has bound. Used from one
    thread."""

    def __init__(self, port_range: tuple[int, int] | None = None) -> None:
        self._range = port_range or ephemeral_range()
        self._next_ephemeral = self._range[0]
        # (protocol, host IP, host port) of every port that ketch has bound.
        self._held: set[tuple[str, str, int]] = set()

    def held_by_ketch(self, protocol: str, host_ip: str, port: int) -> bool:
        return any(
            held_protocol == protocol and held_port == port and _overlaps(held_ip, host_ip)
            for held_protocol, held_ip, held_port in self._held
        )

    def bind(self, request: PortRequest) -> tuple[BoundPort, socket.socket]:
        """Bind a host socket for ``request``. Raises Conflict when the port is in use."""
        if request.host_low == 0:
            return self._bind_first_free(request, self._ephemeral_candidates())
        if request.host_low == request.host_high:
            return self._bind_exact(request, request.host_low)
        candidates = range(request.host_low, request.host_high + 1)
        return self._bind_first_free(request, candidates)

    def _ephemeral_candidates(self) -> Iterable[int]:
        # libnetwork's portallocator hands out ephemeral ports in turn, from the last one
        # allocated, so that a port just released is not given to the next container at once.
        low, high = self._range
        start = self._next_ephemeral
        return itertools.chain(range(start, high + 1), range(low, start))

    def _bind_exact(self, request: PortRequest, port: int) -> tuple[BoundPort, socket.socket]:
        address = f"{request.host_ip}:{port}"
        if self.held_by_ketch(request.protocol, request.host_ip, port):
            raise Conflict(f"Bind for {address} failed: port is already allocated")
        try:
            sock = open_host_socket(request.protocol, request.host_ip, port)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise Conflict(
                    f"Error starting userland proxy: listen {request.protocol} {address}: "
                    "bind: address already in use"
                ) from None
            if error.errno == errno.EADDRNOTAVAIL:
                raise InvalidArgument(
                    f"Error starting userland proxy: listen {request.protocol} {address}: bind: "
                    "cannot assign requested address (HostIp is not an address of this host)"
                ) from None
            raise SystemFailure(f"cannot bind {request.protocol} {address}: {error}") from error
        return self._hold(request, port), sock

    def _bind_first_free(
        self, request: PortRequest, candidates: Iterable[int]
    ) -> tuple[BoundPort, socket.socket]:
        for port in candidates:
            if self.held_by_ketch(request.protocol, request.host_ip, port):
                continue
            try:
                sock = open_host_socket(request.protocol, request.host_ip, port)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    continue
                raise SystemFailure(
                    f"cannot bind {request.protocol} {request.host_ip}:{port}: {error}"
                ) from error
            if request.host_low == 0:
                self._next_ephemeral = port + 1 if port < self._range[1] else self._range[0]
            return self._hold(request, port), sock
        if request.host_low == 0:
            low, high = self._range
            raise Conflict(
                f"Bind for {request.host_ip} failed: all ports from {low} to {high} are allocated"
            )
        raise Conflict(
            f"Bind for {request.host_ip}:{request.host_low}-{request.host_high} failed: port is "
            "already allocated"
        )

    def _hold(self, request: PortRequest, port: int) -> BoundPort:
        self._held.add((request.protocol, request.host_ip, port))
        return BoundPort(request.container_port, request.protocol, request.host_ip, port)

    def release(self, bound: BoundPort) -> None:
        """Mark ``bound`` as free again; the caller closes its socket."""
        self._held.discard((bound.protocol, bound.host_ip, bound.host_port))
