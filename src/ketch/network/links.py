"""Links made over netlink (pyroute2): the bridge of a network, a container's veth pairs, and
``lo`` and ``eth0``, ``eth1``... inside the container's network namespace.

Every function here blocks; the engine calls them from a worker thread. pyroute2 is
imported by the first function that opens a netlink socket with it, not with this module,
because it costs ketchd about 10 MiB and a ketchd without bridge networks never needs it.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING

from ketch import deferred_ssl
from ketch.errors import SystemFailure
from ketch.network.ipam import parse_network
from ketch.network.namespaces import run_in_namespace
from ketch.network.rtnetlink import link_aliases
from ketch.network.store import DEFAULT_MTU

if TYPE_CHECKING:
    from pyroute2 import IPRoute

logger = logging.getLogger(__name__)

# The kernel's main routing table (RT_TABLE_MAIN). The local table contains the addresses
# of the host's own links, which are not routes that a subnet can overlap.
MAIN_TABLE = 254

NETLINK_EXCEPTIONS_MODULE = "pyroute2.netlink.exceptions"


def netlink_errors() -> tuple[type[Exception], ...]:
    """Return the exception types that a failed link change raises: OSError, and
    pyroute2's NetlinkError once pyroute2 is imported. Before that, no NetlinkError can
    have been raised, so an ``except netlink_errors()`` does not import pyroute2."""
    exceptions = sys.modules.get(NETLINK_EXCEPTIONS_MODULE)
    if exceptions is None:
        return (OSError,)
    return (OSError, exceptions.NetlinkError)


def _import_pyroute2() -> None:
    # pyroute2 imports ssl without a fallback (pyroute2.netlink.rtnl.probe_msg), and ketchd
    # leaves ssl out until something needs it.
    deferred_ssl.load()

    import pyroute2  # noqa: F401


def _open_route() -> IPRoute:
    _import_pyroute2()

    from pyroute2 import IPRoute

    return IPRoute()


def _netlink_error() -> type[Exception]:
    _import_pyroute2()

    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError


def host_routes(skip_links: Iterable[str] = ()) -> list[IPv4Network]:
    """Return the IPv4 destinations of the main routing table in the engine's network
    namespace, leaving out routes through ``skip_links`` (the engine's own bridges)."""
    with _open_route() as ipr:
        skipped = {index for name in skip_links for index in ipr.link_lookup(ifname=name)}
        routes = ipr.get_routes(family=2, table=MAIN_TABLE)
    networks = []
    for route in routes:
        destination = route.get("dst")
        if destination is None or route.get("oif") in skipped:
            continue
        network = parse_network(f"{destination}/{route['dst_len']}")
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
    with _open_route() as ipr:
        if not ipr.link_lookup(ifname=name):
            try:
                ipr.link("add", ifname=name, kind="bridge")
                logger.info("created bridge %s for subnet %s", name, subnet)
            except _netlink_error() as error:
                # EEXIST means a concurrent call made the bridge after the lookup.
                if error.code != errno.EEXIST:
                    raise
        index = ipr.link_lookup(ifname=name)[0]
        if alias is not None:
            ipr.link("set", index=index, ifalias=alias)
        addresses = {a.get("address") for a in ipr.get_addr(index=index, family=2)}
        if str(gateway) not in addresses:
            try:
                ipr.addr("add", index=index, address=str(gateway), prefixlen=subnet.prefixlen)
            except _netlink_error() as error:
                if error.code != errno.EEXIST:
                    raise
        ipr.link("set", index=index, mtu=mtu, state="up")


def owned_links(alias_prefix: str) -> dict[str, str]:
    """Return the links whose ifalias starts with ``alias_prefix``: name -> alias."""
    # Read without pyroute2, because every start of ketchd lists the links.
    aliases = link_aliases()
    return {name: alias for name, alias in aliases.items() if alias.startswith(alias_prefix)}


def link_exists(name: str) -> bool:
    with _open_route() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def delete_link(name: str) -> None:
    """Delete link ``name`` if it exists; deleting one end of a veth pair deletes both."""
    with _open_route() as ipr:
        indexes = ipr.link_lookup(ifname=name)
        if not indexes:
            return
        try:
            ipr.link("del", index=indexes[0])
        except _netlink_error() as error:
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
    with _open_route() as ipr:
        ipr.link("add", ifname=host_name, kind="veth", peer={"ifname": peer_name})
        try:
            host_index = ipr.link_lookup(ifname=host_name)[0]
            peer_index = ipr.link_lookup(ifname=peer_name)[0]
            bridge_index = ipr.link_lookup(ifname=bridge)[0]
            ipr.link("set", index=peer_index, mtu=mtu)
            ipr.link("set", index=host_index, mtu=mtu, master=bridge_index, state="up")
            if alias is not None:
                ipr.link("set", index=host_index, ifalias=alias)
            fd = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link("set", index=peer_index, net_ns_fd=fd)
            finally:
                os.close(fd)
        except BaseException:
            ipr.link("del", index=ipr.link_lookup(ifname=host_name)[0])
            raise


def bring_up_loopback() -> None:
    """Bring ``lo`` up in the calling thread's network namespace."""
    with _open_route() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


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
        with _open_route() as ipr:
            index = ipr.link_lookup(ifname=peer_name)[0]
            ipr.link("set", index=index, ifname=config.name, address=config.mac)
            ipr.addr(
                "add", index=index, address=str(config.address), prefixlen=config.subnet.prefixlen
            )
            ipr.link("set", index=index, state="up")
            if config.gateway is not None and not _has_default_route(ipr):
                ipr.route("add", dst="0.0.0.0/0", gateway=str(config.gateway))

    run_in_namespace(namespace, configure)


def restore_default_route(namespace: Path, gateways: list[IPv4Address]) -> None:
    """Add a default route through the first of ``gateways`` that is reachable, when the
    namespace has none (the interface that carried it was removed)."""

    def restore() -> None:
        with _open_route() as ipr:
            if _has_default_route(ipr):
                return
            for gateway in gateways:
                try:
                    ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway))
                    return
                except _netlink_error() as error:
                    logger.debug("no default route through %s: %s", gateway, error)

    run_in_namespace(namespace, restore)


def _has_default_route(ipr: IPRoute) -> bool:
    routes = ipr.get_routes(family=2, table=MAIN_TABLE)
    return any(route.get("dst") is None and route["dst_len"] == 0 for route in routes)
