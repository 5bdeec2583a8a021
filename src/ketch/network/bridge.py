"""The bridge driver: the default ``bridge`` network and the endpoints of containers on it.

Connecting a container, in order (each step is undone if a later one fails)::

    namespace   <exec_root>/netns/<id>: a new network namespace with lo up
    address     the lowest free address of the subnet, and MAC 02:42:<address bytes>
    veth        veth<id[:11]> on the bridge, its peer moved into the namespace as eth0
    record      a row in network_endpoints

Disconnecting deletes the host end of the veth (which deletes eth0 too), unpins the
namespace and deletes the row.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

from ketch.errors import Conflict
from ketch.network import ipam, links
from ketch.network.namespaces import create_namespace, remove_namespace
from ketch.network.store import Endpoint, Network, NetworkStore

logger = logging.getLogger(__name__)

DEFAULT_NETWORK = "bridge"
DEFAULT_BRIDGE = "ketch0"


def veth_name(container_id: str) -> str:
    """Return the host-side veth name of a container: 15 bytes, the kernel's maximum."""
    return "veth" + container_id[:11]


class BridgeDriver:
    """The bridge networks of one engine, used from the event loop.

    SQLite work stays on the loop's thread, because the connection belongs to it. Netlink
    and namespace work, which blocks, runs on worker threads.
    """

    def __init__(self, store: NetworkStore, namespace_root: Path) -> None:
        self._store = store
        self._namespace_root = namespace_root
        # Address allocation reads then writes the endpoint table, so connects take turns.
        self._lock = asyncio.Lock()

    def namespace_path(self, container_id: str) -> Path:
        return self._namespace_root / container_id

    async def default_network(self) -> Network:
        """Return the ``bridge`` network, making its record and its bridge if missing."""
        network = self._store.by_name(DEFAULT_NETWORK)
        if network is None:
            taken = await asyncio.to_thread(links.host_routes)
            taken += [n.subnet for n in self._store.networks()]
            subnet = ipam.choose_subnet(taken)
            network = Network(
                id=secrets.token_hex(32),
                name=DEFAULT_NETWORK,
                driver="bridge",
                subnet=subnet,
                gateway=ipam.gateway_address(subnet),
                bridge=DEFAULT_BRIDGE,
            )
            self._store.add_network(network)
            logger.info("created network %s with subnet %s", network.name, subnet)
        await asyncio.to_thread(
            links.ensure_bridge, network.bridge, network.gateway, network.subnet
        )
        return network

    def connected_containers(self) -> set[str]:
        """Return the ids of containers with an endpoint record or a pinned namespace."""
        ids = {endpoint.container_id for endpoint in self._store.endpoints()}
        if self._namespace_root.is_dir():
            ids.update(path.name for path in self._namespace_root.iterdir())
        return ids

    def network_of(self, endpoint: Endpoint) -> Network:
        """Return the network ``endpoint`` belongs to."""
        return next(n for n in self._store.networks() if n.id == endpoint.network_id)

    async def connect(self, container_id: str) -> Endpoint:
        """Connect a container to the ``bridge`` network; return its existing endpoint if
        it is already connected and its namespace is still pinned."""
        async with self._lock:
            namespace = self.namespace_path(container_id)
            existing = self._store.endpoints_of(container_id)
            if existing and namespace.is_mount():
                return existing[0]
            # Clears what an earlier connect left half-made, such as a veth or an unpinned
            # namespace file after a crash or a reboot.
            await self._disconnect(container_id, existing)
            return await self._connect(container_id, namespace)

    async def _connect(self, container_id: str, namespace: Path) -> Endpoint:
        network = await self.default_network()
        in_use = [e.address for e in self._store.endpoints(network.id)]
        address = ipam.allocate_address(network.subnet, in_use)
        endpoint = Endpoint(
            container_id=container_id,
            network_id=network.id,
            address=address,
            mac=ipam.mac_address(address),
            veth=veth_name(container_id),
        )
        # A temporary peer name unique on the host, since eth0 exists only inside.
        peer = "kp" + container_id[:13]
        await asyncio.to_thread(create_namespace, namespace, links.bring_up_loopback)
        try:
            await asyncio.to_thread(self._wire, endpoint, peer, network, namespace)
            self._store.add_endpoint(endpoint)
        except BaseException:
            await asyncio.to_thread(self._unwire, endpoint.veth, namespace)
            raise
        logger.info("connected container %s to %s as %s", container_id, network.name, address)
        return endpoint

    @staticmethod
    def _wire(endpoint: Endpoint, peer: str, network: Network, namespace: Path) -> None:
        links.add_veth(endpoint.veth, peer, network.bridge, namespace)
        links.configure_container_interface(
            namespace, peer, endpoint.address, network.subnet, endpoint.mac, network.gateway
        )

    @staticmethod
    def _unwire(veth: str | None, namespace: Path) -> None:
        if veth is not None:
            links.delete_link(veth)
        remove_namespace(namespace)

    async def disconnect(self, container_id: str) -> None:
        """Remove the container's veth, namespace and endpoint records, if any."""
        async with self._lock:
            await self._disconnect(container_id, self._store.endpoints_of(container_id))

    async def _disconnect(self, container_id: str, endpoints: list[Endpoint]) -> None:
        namespace = self.namespace_path(container_id)
        # The derived name too: a crash between making the veth and recording the endpoint
        # leaves a veth that no record names, and it would block the next connect.
        veths = {endpoint.veth for endpoint in endpoints} | {veth_name(container_id)}
        for veth in sorted(veths):
            await asyncio.to_thread(self._unwire, veth, namespace)
        self._store.remove_endpoints(container_id)

    async def remove_network(self, name: str) -> None:
        """Delete a network with no endpoints: its bridge and its record.

        Raises Conflict while a container is connected to it.
        """
        network = self._store.by_name(name)
        if network is None:
            return
        connected = self._store.endpoints(network.id)
        if connected:
            raise Conflict(
                f"error while removing network: network {name} id {network.id} has active "
                f"endpoints (container {connected[0].container_id})"
            )
        await asyncio.to_thread(links.delete_link, network.bridge)
        self._store.remove_network(network.id)
        logger.info("removed network %s and bridge %s", network.name, network.bridge)
