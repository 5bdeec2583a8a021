"""Links made over netlink (pyroute2): the bridge of a network, a container's veth pair, and
``lo`` and ``eth0`` inside the container's network namespace.

Every function here blocks; the engine calls them from a worker thread.
"""

from __future__ import annotations

import logging
import os
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ketch.errors import SystemFailure
from ketch.network.ipam import parse_network
from ketch.network.namespaces import run_in_namespace

logger = logging.getLogger(__name__)

CONTAINER_INTERFACE = "eth0"


def host_routes() -> list[IPv4Network]:
    """Return the IPv4 destinations routed in the engine's network namespace."""
    with IPRoute() as ipr:
        routes = ipr.get_routes(family=2)
    networks = []
    for route in routes:
        destination = route.get("dst")
        if destination is None:
            continue
        network = parse_network(f"{destination}/{route['dst_len']}")
        if network is not None:
            networks.append(network)
    return networks


def ensure_bridge(name: str, gateway: IPv4Address, subnet: IPv4Network) -> None:
    """Make bridge ``name`` with ``gateway`` as its address and bring it up, if missing."""
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=name):
            ipr.link("add", ifname=name, kind="bridge")
            logger.info("created bridge %s for subnet %s", name, subnet)
        index = ipr.link_lookup(ifname=name)[0]
        addresses = {a.get("address") for a in ipr.get_addr(index=index, family=2)}
        if str(gateway) not in addresses:
            ipr.addr("add", index=index, address=str(gateway), prefixlen=subnet.prefixlen)
        ipr.link("set", index=index, state="up")


def delete_link(name: str) -> None:
    """Delete link ``name`` if it exists; deleting one end of a veth pair deletes both."""
    with IPRoute() as ipr:
        indexes = ipr.link_lookup(ifname=name)
        if not indexes:
            return
        try:
            ipr.link("del", index=indexes[0])
        except NetlinkError as error:
            raise SystemFailure(f"cannot delete link {name}: {error}") from error


def add_veth(host_name: str, peer_name: str, bridge: str, namespace: Path) -> None:
    """Make a veth pair, attach ``host_name`` to ``bridge`` and move ``peer_name`` into
    the namespace pinned at ``namespace``. On failure the pair is deleted again."""
    with IPRoute() as ipr:
        ipr.link("add", ifname=host_name, kind="veth", peer={"ifname": peer_name})
        try:
            host_index = ipr.link_lookup(ifname=host_name)[0]
            peer_index = ipr.link_lookup(ifname=peer_name)[0]
            bridge_index = ipr.link_lookup(ifname=bridge)[0]
            ipr.link("set", index=host_index, master=bridge_index, state="up")
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
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def configure_container_interface(
    namespace: Path,
    peer_name: str,
    address: IPv4Address,
    subnet: IPv4Network,
    mac: str,
    gateway: IPv4Address,
) -> None:
    """Rename the moved peer to eth0 and give it its MAC, address and default route."""

    def configure() -> None:
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=peer_name)[0]
            ipr.link("set", index=index, ifname=CONTAINER_INTERFACE, address=mac)
            ipr.addr("add", index=index, address=str(address), prefixlen=subnet.prefixlen)
            ipr.link("set", index=index, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway))

    run_in_namespace(namespace, configure)
