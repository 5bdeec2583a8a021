"""Links made over rtnetlink (``ketch.network.rtnetlink``): the bridge of a network, a
container's veth pairs, and ``lo`` and ``eth0``, ``eth1``... inside the container's network
namespace.

Every function here blocks, so the engine calls them from a worker thread. Each works in the
network namespace of the thread that calls it, and a failed request raises OSError with
the kernel's errno.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from ketch.errors import SystemFailure
from ketch.network.ipam import parse_network
from ketch.network.namespaces import run_in_namespace
from ketch.network.rtnetlink import RT_TABLE_MAIN, Link, RouteSocket, link_aliases
from ketch.network.store import DEFAULT_MTU

logger = logging.getLogger(__name__)


def netlink_errors() -> tuple[type[Exception], ...]:
    """Return the exception types that a failed link change raises."""
    return (OSError,)


def _require_link(route_socket: RouteSocket, name: str) -> Link:
    link = route_socket.link(name)
    if link is None:
        raise OSError(errno.ENODEV, f"link {name} not found")
    return link


def host_routes(skip_links: Iterable[str] = ()) -> list[IPv4Network]:
    """Return the IPv4 destinations of the main routing table in the engine's network
    namespace, leaving out routes through ``skip_links`` (the engine's own bridges)."""
    with RouteSocket() as route_socket:
        skipped = set()
        for name in skip_links:
            link = route_socket.link(name)
            if link is not None:
                skipped.add(link.index)
        routes = route_socket.ipv4_routes(RT_TABLE_MAIN)

    networks = []
    for route in routes:
        if route.destination is None or route.oif in skipped:
            continue
        network = parse_network(f"{route.destination}/{route.dst_len}")
        if network is not None:
            networks.append(network)
    return networks


def ensure_bridge(
    name: str,
    gateway: IPv4Address,
    subnet: IPv4Network,
    mtu: int = DEFAULT_MTU,
    alias: str | None = None,
) -> None:
    """Make bridge ``name`` with ``gateway`` as its address and bring it up, if missing.
    ``alias`` (the link's ifalias) marks it as the engine's, for ``owned_links``."""
    with RouteSocket() as route_socket:
        if route_socket.link(name) is None:
            try:
                route_socket.add_bridge(name)
                logger.info("created bridge %s for subnet %s", name, subnet)
            except OSError as error:
                # EEXIST means a concurrent call made the bridge after the lookup.
                if error.errno != errno.EEXIST:
                    raise
        bridge = _require_link(route_socket, name)
        if alias is not None:
            route_socket.set_link(bridge, alias=alias)

        addresses = {address.ip for address in route_socket.ipv4_addresses(bridge)}
        if gateway not in addresses:
            try:
                route_socket.add_ipv4_address(bridge, IPv4Interface((gateway, subnet.prefixlen)))
            except OSError as error:
                if error.errno != errno.EEXIST:
                    raise
        route_socket.set_link(bridge, mtu=mtu, up=True)


def owned_links(alias_prefix: str) -> dict[str, str]:
    """Return the links whose ifalias starts with ``alias_prefix``: name -> alias."""
    aliases = link_aliases()
    return {name: alias for name, alias in aliases.items() if alias.startswith(alias_prefix)}


def link_exists(name: str) -> bool:
    with RouteSocket() as route_socket:
        return route_socket.link(name) is not None


def delete_link(name: str) -> None:
    """Delete link ``name`` if it exists; deleting one end of a veth pair deletes both."""
    with RouteSocket() as route_socket:
        link = route_socket.link(name)
        if link is None:
            return
        try:
            route_socket.delete_link(link)
        except OSError as error:
            raise SystemFailure(f"cannot delete link {name}: {error}") from error


def add_veth(
    host_name: str,
    peer_name: str,
    bridge: str,
    namespace: Path,
    mtu: int = DEFAULT_MTU,
    alias: str | None = None,
) -> None:
    """Make a veth pair, attach ``host_name`` to ``bridge`` and move ``peer_name`` into
    the namespace pinned at ``namespace``. On failure the pair is deleted again.
    ``alias`` (the host end's ifalias) marks it as the engine's, for ``owned_links``."""
    with RouteSocket() as route_socket:
        route_socket.add_veth(host_name, peer_name)
        try:
            _attach_veth(route_socket, host_name, peer_name, bridge, namespace, mtu, alias)
        except BaseException:
            host = route_socket.link(host_name)
            if host is not None:
                route_socket.delete_link(host)
            raise


def _attach_veth(
    route_socket: RouteSocket,
    host_name: str,
    peer_name: str,
    bridge_name: str,
    namespace: Path,
    mtu: int,
    alias: str | None,
) -> None:
    host = _require_link(route_socket, host_name)
    peer = _require_link(route_socket, peer_name)
    bridge = _require_link(route_socket, bridge_name)
    route_socket.set_link(peer, mtu=mtu)
    route_socket.set_link(host, mtu=mtu, master=bridge.index, up=True)
    if alias is not None:
        route_socket.set_link(host, alias=alias)

    fd = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        route_socket.set_link(peer, namespace_fd=fd)
    finally:
        os.close(fd)


def bring_up_loopback() -> None:
    """Bring ``lo`` up in the calling thread's network namespace."""
    with RouteSocket() as route_socket:
        route_socket.set_link(_require_link(route_socket, "lo"), up=True)


@dataclass(frozen=True)
class InterfaceConfig:
    """Settings of a container's interface on one network."""

    name: str
    address: IPv4Address
    subnet: IPv4Network
    mac: str
    # The default route goes through this gateway unless the namespace has one already;
    # None (an internal network) adds no route.
    gateway: IPv4Address | None


def configure_container_interface(namespace: Path, peer_name: str, config: InterfaceConfig) -> None:
    """Rename the moved peer and give it its MAC and address, and a default route through
    its gateway when the namespace has none yet."""

    def configure() -> None:
        with RouteSocket() as route_socket:
            peer = _require_link(route_socket, peer_name)
            route_socket.set_link(peer, name=config.name, mac=config.mac)
            interface = Link(peer.index, config.name)
            address = IPv4Interface((config.address, config.subnet.prefixlen))
            route_socket.add_ipv4_address(interface, address)
            route_socket.set_link(interface, up=True)
            if config.gateway is not None and not _has_default_route(route_socket):
                route_socket.add_default_route(config.gateway)

    run_in_namespace(namespace, configure)


def restore_default_route(namespace: Path, gateways: list[IPv4Address]) -> None:
    """Add a default route through the first of ``gateways`` that is reachable, when the
    namespace has none (the interface that carried it was removed)."""

    def restore() -> None:
        with RouteSocket() as route_socket:
            if _has_default_route(route_socket):
                return
            for gateway in gateways:
                try:
                    route_socket.add_default_route(gateway)
                    return
                except OSError as error:
                    logger.debug("no default route through %s: %s", gateway, error)

    run_in_namespace(namespace, restore)


def _has_default_route(route_socket: RouteSocket) -> bool:
    routes = route_socket.ipv4_routes(RT_TABLE_MAIN)
    return any(route.destination is None and route.dst_len == 0 for route in routes)
