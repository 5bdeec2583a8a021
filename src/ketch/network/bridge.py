"""The bridge driver: the default ``bridge`` network, user-defined networks, and the
endpoints of containers on them.

A network is a record and a Linux bridge: the instance's default bridge (``ketch0`` for
the default data root, see ketch.network.instance) for ``bridge``, ``br-<id[:12]>`` for
user-defined ones unless the ``com.docker.network.bridge.name`` option names another. The
record is written before the bridge is made, so a crash in between leaves a record whose
bridge the next start makes, never a bridge that nothing names.

Connecting a container to a network, in order (each step is undone if a later one fails)::

    namespace   <exec_root>/netns/<id>: a network namespace with lo up, made on the first
                connect of the container and shared by all its endpoints
    address     the requested one, or the lowest free one of the ip-range (the subnet when
                there is none), and MAC 02:42:<address bytes> unless one is requested
    veth        v<container id[:7]><network id[:7]> on the bridge, its peer moved into the
                namespace as eth0 (eth1, eth2... for further networks)
    record      a row in network_endpoints

Disconnecting deletes the host end of the veth (which deletes the container's interface
too) and the row; disconnecting the last endpoint unpins the namespace as well.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ketch.errors import Conflict, Forbidden, NotFound
from ketch.network import ipam, links
from ketch.network.instance import Instance, instance_tag
from ketch.network.namespaces import create_namespace, is_pinned, remove_namespace
from ketch.network.services import NetworkService, notify_down, notify_up
from ketch.network.store import DEFAULT_MTU, Endpoint, Network, NetworkStore

logger = logging.getLogger(__name__)

DEFAULT_NETWORK = "bridge"

# Options of docker's bridge driver that a network create may set.
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
ICC_OPTION = "com.docker.network.bridge.enable_icc"


# Link aliases (ifalias) that mark the engine's own links, so that a start can find and
# delete the ones that no record names any more. A bridge gets "<prefix><tag> <network id>"
# and the host end of a veth "<prefix><tag> <container id> <network id>", with the
# instance's tag. Aliases created before tags existed lack the "<tag> " part.
BRIDGE_ALIAS_PREFIX = "ketch network "
VETH_ALIAS_PREFIX = "ketch endpoint "


def _now() -> str:
    # RFC 3339 in UTC with nanoseconds, the form of the Engine API's timestamps.
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanoseconds:09d}Z"


def is_own_leftover(
    fields: list[str],
    tag: str,
    recorded: set[tuple[str, ...]],
    key_size: int,
    recorded_containers: frozenset[str] = frozenset(),
) -> bool:
    """Tell whether a link is this instance's and no record names it.

    ``fields`` is the link's alias after its prefix, split at spaces, and a record's key is
    ``key_size`` fields long: the network id of a bridge, or the container and network id
    of a veth. An untagged alias, made before tags existed, counts as this instance's only
    when its container is in ``recorded_containers``. So links of other instances, and
    untagged bridges, are never leftovers, because another instance may own them.
    """
    if len(fields) == key_size + 1:
        return fields[0] == tag and tuple(fields[1:]) not in recorded
    if len(fields) == key_size and fields[0] in recorded_containers:
        return tuple(fields) not in recorded
    return False


def veth_name(container_id: str, network_id: str) -> str:
    """Return the host-side veth name of an endpoint: 15 bytes, the kernel's maximum."""
    return "v" + container_id[:7] + network_id[:7]


def _peer_name(container_id: str, network_id: str) -> str:
    # A temporary name unique on the host, since eth0 and its siblings exist only inside.
    return "k" + container_id[:7] + network_id[:7]


@dataclass(frozen=True)
class NetworkRequest:
    """A user-defined network to create, checked for syntax but not against the host."""

    name: str
    subnet: IPv4Network | None = None
    gateway: IPv4Address | None = None
    ip_range: IPv4Network | None = None
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    mtu: int = DEFAULT_MTU


@dataclass(frozen=True)
class EndpointRequest:
    """Endpoint settings that a client requested for a container on one network."""

    aliases: tuple[str, ...] = ()
    address: IPv4Address | None = None
    mac: str | None = None


class BridgeDriver:
    """The bridge networks of one engine, used from the event loop.

    SQLite work stays on the loop's thread, because the connection belongs to it. Netlink
    and namespace work, which blocks, runs on worker threads.
    """

    def __init__(
        self, store: NetworkStore, namespace_root: Path, instance: Instance | None = None
    ) -> None:
        self.store = store
        self._namespace_root = namespace_root
        # Without an instance, the tag comes from the namespace root, unique per engine too.
        self.instance = instance or Instance(instance_tag(namespace_root))
        self.services: list[NetworkService] = []
        # Ids of networks whose bridge this process has brought up and announced.
        self._up: set[str] = set()
        # Ids of networks whose bridge this process has made or checked over netlink since
        # ketch last changed it or an operation on it failed. Requests that need a bridge
        # skip the netlink check for these, so a network list, create or connect costs no
        # netlink round trip once the start has checked the bridge.
        self._checked_bridges: set[str] = set()
        # Address allocation reads then writes the endpoint table, so changes take turns.
        self._lock = asyncio.Lock()
        # Two first uses at once (such as two runs) must not both record ``bridge``.
        self._default_lock = asyncio.Lock()
        # Two bring-ups of one network at once would both try to add its bridge.
        self._bridge_lock = asyncio.Lock()

    def namespace_path(self, container_id: str) -> Path:
        return self._namespace_root / container_id

    # Networks

    async def default_network(self) -> Network:
        """Return the ``bridge`` network, making its record and its bridge if missing."""
        async with self._default_lock:
            network = self.store.by_name(DEFAULT_NETWORK) or await self._record_default()
        await self.bring_up(network)
        return network

    # NOTE: a recorded ``bridge`` network keeps the bridge it was made with, so a changed
    # ``bridge`` setting, or a data root whose record predates instance names, is not applied.
    async def _record_default(self) -> Network:
        subnet = ipam.choose_subnet(await self._used_subnets())
        network = Network(
            id=secrets.token_hex(32),
            name=DEFAULT_NETWORK,
            driver="bridge",
            subnet=subnet,
            gateway=ipam.gateway_address(subnet),
            bridge=self.instance.default_bridge,
            options={BRIDGE_NAME_OPTION: self.instance.default_bridge},
            created=_now(),
        )
        self.store.add_network(network)
        logger.info("created network %s with subnet %s", network.name, subnet)
        return network

    async def _used_subnets(self) -> list[IPv4Network]:
        networks = self.store.networks()
        bridges = [n.bridge for n in networks]
        routes = await asyncio.to_thread(links.host_routes, bridges)
        return routes + [n.subnet for n in networks]

    async def bring_up(self, network: Network) -> None:
        """Make the network's bridge if missing and, once per process, tell the services.

        The bridge is checked over netlink once, and again only after ``forget_bridge``.
        """
        async with self._bridge_lock:
            if network.id not in self._checked_bridges:
                await asyncio.to_thread(self._ensure_bridge, network)
                self._checked_bridges.add(network.id)
        if network.id not in self._up:
            self._up.add(network.id)
            await notify_up(self.services, network)

    def forget_bridge(self, network_id: str) -> None:
        """Check the network's bridge over netlink again at its next use, because an
        operation on it failed or ketch changed it."""
        self._checked_bridges.discard(network_id)

    def _ensure_bridge(self, network: Network) -> None:
        alias = f"{BRIDGE_ALIAS_PREFIX}{self.instance.tag} {network.id}"
        links.ensure_bridge(network.bridge, network.gateway, network.subnet, network.mtu, alias)

    async def remove_leftover_links(self) -> None:
        """Delete the engine's bridges and veths that no record names, which a crash
        between deleting a record and its link leaves behind."""
        # Under the lock: a connect makes its veth before it records the endpoint.
        async with self._lock:
            await self._remove_leftover_links()

    async def _remove_leftover_links(self) -> None:
        tag = self.instance.tag
        networks: set[tuple[str, ...]] = {(n.id,) for n in self.store.networks()}
        endpoints: set[tuple[str, ...]] = {
            (e.container_id, e.network_id) for e in self.store.endpoints()
        }
        containers = frozenset(key[0] for key in endpoints)
        bridges = await asyncio.to_thread(links.owned_links, BRIDGE_ALIAS_PREFIX)
        for name, alias in bridges.items():
            fields = alias.removeprefix(BRIDGE_ALIAS_PREFIX).split(" ")
            if is_own_leftover(fields, tag, networks, key_size=1):
                logger.warning("deleting bridge %s of a removed network", name)
                await asyncio.to_thread(links.delete_link, name)
        veths = await asyncio.to_thread(links.owned_links, VETH_ALIAS_PREFIX)
        for name, alias in veths.items():
            fields = alias.removeprefix(VETH_ALIAS_PREFIX).split(" ")
            if is_own_leftover(fields, tag, endpoints, key_size=2, recorded_containers=containers):
                logger.warning("deleting veth %s of a removed endpoint", name)
                await asyncio.to_thread(links.delete_link, name)

    async def bring_up_all(self) -> None:
        """Bring up the bridge of every recorded network, as ketchd's start does."""
        for network in self.store.networks():
            await self.bring_up(network)

    async def create_network(self, request: NetworkRequest) -> Network:
        """Record a user-defined network, make its bridge and tell the services."""
        async with self._lock:
            if self.store.by_name(request.name) is not None:
                raise Conflict(f"network with name {request.name} already exists")
            network = await self._network_from(request)
            self.store.add_network(network)
            try:
                await asyncio.to_thread(self._ensure_bridge, network)
            except BaseException as error:
                await self._undo_create(network, error)
                raise
            self._checked_bridges.add(network.id)
        logger.info(
            "created network %s (%s) with subnet %s on bridge %s",
            network.name,
            network.id[:12],
            network.subnet,
            network.bridge,
        )
        self._up.add(network.id)
        await notify_up(self.services, network)
        return network

    async def _undo_create(self, network: Network, error: BaseException) -> None:
        """Delete the bridge and the record of a network whose bridge setup failed.

        The record goes even when the bridge cannot be deleted, and the setup ``error``
        stays the one raised. The deletion's failure is logged and added to it as a note.
        """
        try:
            await asyncio.to_thread(links.delete_link, network.bridge)
        except Exception as cleanup_error:
            logger.error(
                "failed to delete bridge %s of network %s after its setup failed: %s",
                network.bridge,
                network.name,
                cleanup_error,
            )
            error.add_note(f"deleting bridge {network.bridge} also failed: {cleanup_error}")
        finally:
            self.store.remove_network(network.id)

    async def _network_from(self, request: NetworkRequest) -> Network:
        network_id = secrets.token_hex(32)
        bridge = request.options.get(BRIDGE_NAME_OPTION) or "br-" + network_id[:12]
        if any(n.bridge == bridge for n in self.store.networks()):
            raise Conflict(f"bridge name {bridge} is already used by another network")
        if await asyncio.to_thread(links.link_exists, bridge):
            raise Conflict(f"bridge name {bridge}: a link with that name exists on the host")
        subnet = request.subnet
        if subnet is None:
            subnet = ipam.choose_subnet(await self._used_subnets())
        else:
            networks = self.store.networks()
            routes = await asyncio.to_thread(links.host_routes, [n.bridge for n in networks])
            ipam.check_free(subnet, [(n.name, n.subnet) for n in networks], routes)
        return Network(
            id=network_id,
            name=request.name,
            driver="bridge",
            subnet=subnet,
            gateway=request.gateway or ipam.gateway_address(subnet),
            bridge=bridge,
            ip_range=request.ip_range,
            internal=request.internal,
            attachable=request.attachable,
            labels=dict(request.labels),
            options=dict(request.options),
            created=_now(),
            mtu=request.mtu,
        )

    async def remove_network(self, network: Network) -> None:
        """Delete a user-defined network with no endpoints: its bridge and its record.

        Raises Forbidden for the default network and Conflict while a container is
        connected to it.
        """
        if network.name == DEFAULT_NETWORK:
            raise Forbidden(f"{network.name} is a pre-defined network and cannot be removed")
        async with self._lock:
            connected = self.store.endpoints(network.id)
            if connected:
                raise Conflict(
                    f"error while removing network: network {network.name} id {network.id} "
                    f"has active endpoints (container {connected[0].container_id[:12]})"
                )
            await notify_down(self.services, network)
            self._up.discard(network.id)
            self.forget_bridge(network.id)
            await asyncio.to_thread(links.delete_link, network.bridge)
            self.store.remove_network(network.id)
        logger.info("removed network %s and bridge %s", network.name, network.bridge)

    def network(self, network_id: str) -> Network:
        network = self.store.by_id(network_id)
        if network is None:
            raise NotFound(f"network {network_id} not found")
        return network

    # Endpoints

    def connected_containers(self) -> set[str]:
        """Return the ids of containers with an endpoint record or a pinned namespace."""
        ids = {endpoint.container_id for endpoint in self.store.endpoints()}
        if self._namespace_root.is_dir():
            ids.update(path.name for path in self._namespace_root.iterdir())
        return ids

    def network_of(self, endpoint: Endpoint) -> Network:
        """Return the network ``endpoint`` belongs to."""
        return self.network(endpoint.network_id)

    def has_namespace(self, container_id: str) -> bool:
        return is_pinned(self.namespace_path(container_id))

    async def connect(
        self, container_id: str, network: Network, request: EndpointRequest | None = None
    ) -> Endpoint:
        """Connect a container to ``network``; return its existing endpoint if it is
        already connected and its namespace is still pinned."""
        request = request or EndpointRequest()
        async with self._lock:
            namespace = self.namespace_path(container_id)
            if not is_pinned(namespace):
                # Clears what an earlier connect left half-made, or what a reboot left
                # without a namespace, before starting over.
                await self._disconnect_all(container_id)
                await asyncio.to_thread(create_namespace, namespace, links.bring_up_loopback)
            for endpoint in self.store.endpoints_of(container_id):
                if endpoint.network_id == network.id:
                    return endpoint
            # A veth that a crash left between making it and recording the endpoint.
            await asyncio.to_thread(links.delete_link, veth_name(container_id, network.id))
            return await self._connect(container_id, network, request, namespace)

    async def _connect(
        self, container_id: str, network: Network, request: EndpointRequest, namespace: Path
    ) -> Endpoint:
        await self.bring_up(network)
        in_use = [e.address for e in self.store.endpoints(network.id)]
        if request.address is not None:
            address = self._check_requested(network, request.address, in_use)
        else:
            address = ipam.allocate_address(
                network.subnet, in_use, network.ip_range, network.gateway
            )
        used_names = {e.interface for e in self.store.endpoints_of(container_id)}
        interface = next(
            f"eth{n}" for n in range(len(used_names) + 1) if f"eth{n}" not in used_names
        )
        endpoint = Endpoint(
            container_id=container_id,
            network_id=network.id,
            address=address,
            mac=request.mac or ipam.mac_address(address),
            veth=veth_name(container_id, network.id),
            aliases=request.aliases,
            interface=interface,
            requested_address=request.address,
        )
        try:
            await asyncio.to_thread(self._wire, endpoint, network, namespace)
            self.store.add_endpoint(endpoint)
        except BaseException:
            # The bridge may be what failed (deleted or set down outside ketch), so the
            # next use checks it again.
            # NOTE: this connect still fails. Only the next one makes a missing bridge again.
            self.forget_bridge(network.id)
            await asyncio.to_thread(links.delete_link, endpoint.veth)
            raise
        logger.info(
            "connected container %s to %s as %s on %s",
            container_id[:12],
            network.name,
            address,
            interface,
        )
        return endpoint

    @staticmethod
    def _check_requested(
        network: Network, address: IPv4Address, in_use: list[IPv4Address]
    ) -> IPv4Address:
        ipam.check_in_subnet(address, network.subnet, "IPv4 address")
        if address == network.gateway or address in in_use:
            raise Conflict(f"Address already in use: {address} on network {network.name}")
        return address

    def _wire(self, endpoint: Endpoint, network: Network, namespace: Path) -> None:
        peer = _peer_name(endpoint.container_id, endpoint.network_id)
        tag = self.instance.tag
        alias = f"{VETH_ALIAS_PREFIX}{tag} {endpoint.container_id} {endpoint.network_id}"
        links.add_veth(endpoint.veth, peer, network.bridge, namespace, network.mtu, alias)
        config = links.InterfaceConfig(
            name=endpoint.interface,
            address=endpoint.address,
            subnet=network.subnet,
            mac=endpoint.mac,
            gateway=None if network.internal else network.gateway,
        )
        links.configure_container_interface(namespace, peer, config)

    async def disconnect(self, container_id: str, network_id: str | None = None) -> None:
        """Remove one endpoint of a container, or all of them with its namespace when
        ``network_id`` is None."""
        async with self._lock:
            if network_id is None:
                await self._disconnect_all(container_id)
                return
            await self._disconnect_one(container_id, network_id)

    async def _disconnect_one(self, container_id: str, network_id: str) -> None:
        endpoints = self.store.endpoints_of(container_id)
        for endpoint in endpoints:
            if endpoint.network_id == network_id:
                await asyncio.to_thread(links.delete_link, endpoint.veth)
                self.store.remove_endpoint(container_id, network_id)
        namespace = self.namespace_path(container_id)
        # The default route goes back through a remaining network that has egress.
        gateways = []
        for endpoint in endpoints:
            if endpoint.network_id == network_id:
                continue
            network = self.network_of(endpoint)
            if not network.internal:
                gateways.append(network.gateway)
        if gateways and is_pinned(namespace):
            await asyncio.to_thread(links.restore_default_route, namespace, gateways)

    async def _disconnect_all(self, container_id: str) -> None:
        namespace = self.namespace_path(container_id)
        # The derived names too: a crash between making a veth and recording its endpoint
        # leaves a veth that no record names, and it would block the next connect.
        veths = {e.veth for e in self.store.endpoints_of(container_id)}
        veths |= {veth_name(container_id, n.id) for n in self.store.networks()}
        for veth in sorted(veths):
            await asyncio.to_thread(links.delete_link, veth)
        await asyncio.to_thread(remove_namespace, namespace)
        self.store.remove_endpoints(container_id)
