"""Engine glue for container networking: which networks a container is planned on, its
endpoints when it starts and their release when it stops, connect and disconnect while it
runs, and the container's /etc/hosts lines for its own addresses.

The engine pins a network namespace for each container on a bridge network at
``<exec_root>/netns/<id>`` and names that path in the spec's ``linux.namespaces``. So the
runtime joins a namespace that is already wired, and the engine need not move a veth into
the init's namespace between the runtime's create and start. ``container:<id>`` joins the
pinned namespace of that container.

``container.network_endpoints`` maps a network name to the endpoint's fields for inspect.
At create it holds what the client asked for (NetworkID, Aliases, IPAMConfig, MacAddress);
each start connects the container to every network named there, the network of its
NetworkMode first (eth0). As docker does, the endpoints live while the container runs:
when it stops or exits, its veths, addresses, DNS names and pinned namespace are released
and ``network_endpoints`` goes back to what the client configured (network, aliases,
``--ip``, a requested MAC), so a network that only stopped containers name can be removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ketch.errors import Conflict, Forbidden, InvalidArgument, NotFound, SystemFailure
from ketch.network import ipam
from ketch.network.bridge import DEFAULT_NETWORK, BridgeDriver, EndpointRequest
from ketch.network.instance import Instance
from ketch.network.links import netlink_errors
from ketch.network.services import NetworkService
from ketch.network.store import Endpoint, Network, NetworkStore

logger = logging.getLogger(__name__)

BRIDGE_MODES = ("default", "bridge")
CONTAINER_MODE_PREFIX = "container:"
# Modes that make or share a namespace without endpoints of their own.
NAMESPACE_ONLY_MODES = ("host", "none")


def network_name_of(mode: str) -> str | None:
    """Return the network that NetworkMode ``mode`` connects to, None for host, none and
    container:<id>."""
    if mode in NAMESPACE_ONLY_MODES or mode.startswith(CONTAINER_MODE_PREFIX):
        return None
    return DEFAULT_NETWORK if mode in BRIDGE_MODES else mode


class ContainerNetworking:
    """Bridge endpoints of containers, used from the event loop."""

    def __init__(self, db: Any, exec_root: Path, instance: Instance | None = None) -> None:
        self.driver = BridgeDriver(NetworkStore(db), exec_root / "netns", instance)
        # Told about every network brought up or removed; see ketch.network.services.
        self.services: list[NetworkService] = self.driver.services
        # Unfinished release tasks of stopped containers' endpoints, by container id. A start
        # or removal of the container awaits its release first.
        self._releases: dict[str, asyncio.Task[None]] = {}

    # Lookups for other parts of ketchd

    def networks(self) -> list[Network]:
        return self.driver.store.networks()

    def endpoints(self, network_id: str) -> list[Endpoint]:
        return self.driver.store.endpoints(network_id)

    def find_network(self, reference: str) -> Network:
        """Find a network by name, full id or unique id prefix; NotFound in docker's words."""
        store = self.driver.store
        network = store.by_name(reference) or store.by_id(reference)
        if network is not None:
            return network
        matches = [n for n in store.networks() if reference and n.id.startswith(reference)]
        if len(matches) != 1:
            raise NotFound(f"network {reference} not found")
        return matches[0]

    async def network_by_reference(self, reference: str) -> Network:
        """Like ``find_network``, but makes the default ``bridge`` network on first use."""
        if reference == DEFAULT_NETWORK:
            return await self.driver.default_network()
        return self.find_network(reference)

    def namespace_path(self, container_id: str, network_mode: str) -> Path | None:
        """Return the namespace the spec joins, or None when the runtime makes its own."""
        if network_mode.startswith(CONTAINER_MODE_PREFIX):
            return self.driver.namespace_path(network_mode.removeprefix(CONTAINER_MODE_PREFIX))
        if network_name_of(network_mode) is None:
            return None
        return self.driver.namespace_path(container_id)

    # Create

    async def plan(
        self, options: Any, body: dict[str, Any], resolve: Callable[[str], Any]
    ) -> dict[str, dict[str, Any]]:
        """Check the networks a create body names and return the planned endpoints.

        Rewrites ``options.network_mode`` from container:<name> to container:<id>, as
        docker does. Raises NotFound for an unknown network or container.
        """
        mode = options.network_mode
        configs = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
        primary = network_name_of(mode)
        if primary is None:
            others = [name for name in configs if name != mode]
            if others:
                raise InvalidArgument(
                    "Container cannot be connected to network endpoints: "
                    + ", ".join([mode, *others])
                )
            if mode in configs:
                check_predefined_endpoint(configs[mode])
            if mode.startswith(CONTAINER_MODE_PREFIX):
                options.network_mode = self._container_mode(mode, resolve)
            return {}
        if mode == "default":
            # The docker CLI names the default network "default" here, and other clients "bridge".
            configs = {
                (DEFAULT_NETWORK if name in BRIDGE_MODES else name): config
                for name, config in configs.items()
            }
        names = [primary] + [name for name in configs if name != primary]
        # Docker CLIs before API 1.44 send --mac-address as Config.MacAddress.
        legacy_mac = body.get("MacAddress")
        planned = {}
        for name in names:
            network = await self.network_by_reference(name)
            config = dict(configs.get(name) or {})
            if name == primary and legacy_mac and not config.get("MacAddress"):
                config["MacAddress"] = legacy_mac
            request = endpoint_request(config, network)
            planned[network.name] = planned_fields(network, request)
            if name == primary and mode not in BRIDGE_MODES:
                options.network_mode = network.name  # named by id or id prefix
        return planned

    def _container_mode(self, mode: str, resolve: Callable[[str], Any]) -> str:
        target = resolve(mode.removeprefix(CONTAINER_MODE_PREFIX))
        target_mode = target.host_config.get("NetworkMode", "default")
        if network_name_of(target_mode) is None:
            # Limitation: only a container on a bridge network has a pinned namespace to
            # join, so a target in host, none or container mode is rejected.
            raise InvalidArgument(
                f"cannot join the network namespace of container {target.id}: its network "
                f"mode is {target_mode}, and ketch can join only containers on a bridge network"
            )
        return CONTAINER_MODE_PREFIX + target.id

    # Start

    async def connect_container(
        self, container: Any, hosts_path: Path, find: Callable[[str], Any]
    ) -> None:
        """Connect a starting container to its planned networks and name its addresses in
        its /etc/hosts; for container:<id>, check that the target runs."""
        mode = container.host_config.get("NetworkMode", "default")
        if mode.startswith(CONTAINER_MODE_PREFIX):
            target_id = mode.removeprefix(CONTAINER_MODE_PREFIX)
            target = find(target_id)
            if target is None or not target.running:
                raise Conflict(f"cannot join network of a non running container: {target_id}")
            return
        primary = network_name_of(mode)
        if primary is None:
            return
        await self.wait_for_release(container.id)
        planned = dict(container.network_endpoints) or {primary: {}}
        order = [primary] + [name for name in planned if name != primary]
        connected: dict[str, dict[str, Any]] = {}
        try:
            for name in order:
                fields = configured_fields(planned.get(name, {}))
                network = await self._planned_network(name, fields)
                request = endpoint_request(fields, network)
                endpoint = await self._connect(container.id, network, request)
                connected[network.name] = self.inspect_fields(endpoint, network)
                hostname = container.config.get("Hostname", "")
                self._add_hosts_line(hosts_path, endpoint.address, hostname)
        except BaseException:
            # A start that fails here leaves no endpoint behind, and the configuration
            # stays as it was for the next start.
            await self.disconnect(container.id)
            remove_hosts_lines(
                hosts_path, [fields.get("IPAddress") for fields in connected.values()]
            )
            raise
        container.network_endpoints = connected

    async def _planned_network(self, name: str, fields: dict[str, Any]) -> Network:
        network_id = fields.get("NetworkID")
        if network_id:
            network = self.driver.store.by_id(network_id)
            if network is not None:
                return network
        if name == DEFAULT_NETWORK:
            return await self.driver.default_network()
        network = self.driver.store.by_name(name)
        if network is None:
            raise NotFound(f"network {name} not found")
        return network

    async def _connect(
        self, container_id: str, network: Network, request: EndpointRequest
    ) -> Endpoint:
        try:
            return await self.driver.connect(container_id, network, request)
        except netlink_errors() as error:
            raise SystemFailure(
                f"cannot connect container {container_id} to network {network.name}: {error}"
            ) from error

    @staticmethod
    def _add_hosts_line(hosts_path: Path, address: IPv4Address, hostname: str) -> None:
        line = f"{address}\t{hostname}"
        text = hosts_path.read_text() if hosts_path.exists() else ""
        # Compared by whole lines, since 10.0.0.1 is a substring of 110.0.0.1.
        if line not in text.splitlines():
            # Written in place: the file is bind-mounted into a container that may have run
            # before, and a rename would leave that mount on the old file.
            with hosts_path.open("a") as hosts:
                hosts.write(line + "\n")

    def inspect_fields(self, endpoint: Endpoint, network: Network) -> dict[str, Any]:
        """Return the fields of NetworkSettings.Networks.<name> for an endpoint."""
        endpoint_key = f"{endpoint.network_id}/{endpoint.container_id}".encode()
        requested = endpoint.requested_address
        return {
            "IPAMConfig": {"IPv4Address": str(requested)} if requested else None,
            "Aliases": list(endpoint.aliases) or None,
            "NetworkID": network.id,
            # Docker's endpoint IDs are random. This one is derived, so it needs no column.
            "EndpointID": hashlib.sha256(endpoint_key).hexdigest(),
            "Gateway": "" if network.internal else str(network.gateway),
            "IPAddress": str(endpoint.address),
            "IPPrefixLen": network.subnet.prefixlen,
            "MacAddress": endpoint.mac,
            "SandboxKey": str(self.driver.namespace_path(endpoint.container_id)),
        }

    # Connect and disconnect of existing containers

    async def connect_network(
        self, container: Any, network: Network, config: dict[str, Any], hosts_path: Path
    ) -> None:
        """Connect ``container`` to ``network``: now if it has a namespace (it started
        before), else at its next start. Updates ``container.network_endpoints``."""
        check_connectable(container, network)
        if network.name in container.network_endpoints:
            raise Forbidden(
                f"endpoint with name {container.name.lstrip('/')} already exists in network "
                f"{network.name}"
            )
        request = endpoint_request(config, network)
        await self.wait_for_release(container.id)
        if not self.driver.has_namespace(container.id):
            container.network_endpoints[network.name] = planned_fields(network, request)
            return
        endpoint = await self._connect(container.id, network, request)
        container.network_endpoints[network.name] = self.inspect_fields(endpoint, network)
        self._add_hosts_line(hosts_path, endpoint.address, container.config.get("Hostname", ""))

    async def disconnect_network(self, container: Any, network: Network) -> None:
        """Remove the container's endpoint on ``network`` and drop it from
        ``container.network_endpoints``."""
        mode = container.host_config.get("NetworkMode", "default")
        if mode == "host" or network.name == "host":
            raise Forbidden(
                "container cannot be disconnected from host network or connected to host network"
            )
        if network.name not in container.network_endpoints:
            raise Forbidden(f"container {container.id} is not connected to network {network.name}")
        await self.wait_for_release(container.id)
        await self.driver.disconnect(container.id, network.id)
        del container.network_endpoints[network.name]

    # Stop and exit

    def release_on_exit(
        self,
        container: Any,
        hosts_of: Callable[[str], Path],
        containers: Callable[[], Iterable[Any]],
    ) -> None:
        """Release the endpoints of a container that stopped, exited or failed to start.

        ``container.network_endpoints`` goes back to the configured fields at once, for the
        caller to save. The veths, addresses, DNS names and namespace go in a background
        task, which the next start or removal of the container awaits. A namespace that a
        running ``container:<id>`` container joins stays until that container stops too.
        ``hosts_of`` returns a container's /etc/hosts file, whose lines for the released
        addresses are removed.
        """
        mode = container.host_config.get("NetworkMode", "default")
        if mode.startswith(CONTAINER_MODE_PREFIX):
            # This may have been the last running container in the target's namespace.
            target_id = mode.removeprefix(CONTAINER_MODE_PREFIX)
            target = next((c for c in containers() if c.id == target_id), None)
            if target is not None and not target.running:
                self._release_unless_joined(target, hosts_of(target.id), containers)
            return
        if network_name_of(mode) is None:
            return
        container.network_endpoints = {
            name: configured_fields(fields) for name, fields in container.network_endpoints.items()
        }
        self._release_unless_joined(container, hosts_of(container.id), containers)

    def _release_unless_joined(
        self, container: Any, hosts_path: Path, containers: Callable[[], Iterable[Any]]
    ) -> None:
        joined_by = CONTAINER_MODE_PREFIX + container.id
        for other in containers():
            if other.running and other.host_config.get("NetworkMode") == joined_by:
                logger.info(
                    "keeping the network namespace of stopped container %s: container %s "
                    "runs in it",
                    container.id,
                    other.id,
                )
                return
        pending = self._releases.get(container.id)
        if pending is not None and not pending.done():
            return
        task = asyncio.get_running_loop().create_task(self._release(container.id, hosts_path))
        self._releases[container.id] = task
        task.add_done_callback(lambda done: self._forget_release(container.id, done))

    def _forget_release(self, container_id: str, task: asyncio.Task[None]) -> None:
        if self._releases.get(container_id) is task:
            del self._releases[container_id]
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "failed to release the network endpoints of container %s",
                container_id,
                exc_info=task.exception(),
            )

    async def _release(self, container_id: str, hosts_path: Path) -> None:
        addresses = [str(e.address) for e in self.driver.store.endpoints_of(container_id)]
        await self._disconnect_logged(container_id)
        remove_hosts_lines(hosts_path, addresses)
        logger.info("released the network endpoints of stopped container %s", container_id)

    async def wait_for_release(self, container_id: str) -> None:
        """Wait until a release of the container's endpoints that is under way is done."""
        task = self._releases.get(container_id)
        if task is not None:
            # asyncio.wait neither cancels the release nor raises its error, which
            # _forget_release logs.
            await asyncio.wait({task})

    # Removal and reconciliation

    async def disconnect(self, container_id: str) -> None:
        """Remove the container's endpoints; a failure is logged so that removal goes on."""
        await self.wait_for_release(container_id)
        await self._disconnect_logged(container_id)

    async def _disconnect_logged(self, container_id: str) -> None:
        try:
            await self.driver.disconnect(container_id)
        except (*netlink_errors(), SystemFailure) as error:
            logger.error(
                "failed to disconnect container %s from its networks: %s", container_id, error
            )

    async def remove_stale(self, container_ids: set[str]) -> None:
        """Disconnect endpoints and namespaces of containers that no longer exist, which a
        crash of ketchd between a removal's steps can leave behind."""
        for container_id in self.driver.connected_containers() - container_ids:
            logger.warning("removing the network endpoints of gone container %s", container_id)
            await self.disconnect(container_id)
        try:
            await self.driver.remove_leftover_links()
        except (*netlink_errors(), SystemFailure) as error:
            logger.error("failed to delete leftover network links: %s", error)

    async def bring_up_networks(self) -> None:
        """Make missing bridges of recorded networks and tell the services about each, as
        ketchd's start does."""
        try:
            await self.driver.bring_up_all()
        except netlink_errors() as error:
            logger.error("failed to bring up the bridges of the networks: %s", error)


def check_connectable(container: Any, network: Network) -> None:
    """Raise docker's errors for containers whose mode forbids further networks."""
    mode = container.host_config.get("NetworkMode", "default")
    if mode == "host":
        raise Forbidden(
            "container cannot be disconnected from host network or connected to host network"
        )
    if mode == "none":
        raise Forbidden(
            "container cannot be connected to multiple networks with one of the networks in "
            "private (none) mode"
        )
    if mode.startswith(CONTAINER_MODE_PREFIX):
        raise Forbidden(
            "container sharing network namespace with another container or host cannot be "
            "connected to any other network"
        )


def endpoint_request(config: dict[str, Any], network: Network) -> EndpointRequest:
    """Read an EndpointSettings object (Aliases, IPAMConfig.IPv4Address, MacAddress) for
    ``network``. The InvalidArgument raised names the invalid field."""
    if not isinstance(config, dict):
        raise InvalidArgument(
            f"invalid endpoint settings for network {network.name}: expected an object"
        )
    aliases = config.get("Aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise InvalidArgument(
            f"invalid Aliases for network {network.name}: expected a list of names"
        )

    if network.name == DEFAULT_NETWORK:
        check_predefined_endpoint(config)
    ipam_config = _ipam_config(config)
    address_text = ipam_config.get("IPv4Address")
    address = ipam.parse_address(address_text, "IPv4Address") if address_text else None
    if address is not None:
        ipam.check_in_subnet(address, network.subnet, "IPv4Address")
    if ipam_config.get("IPv6Address"):
        raise InvalidArgument(
            f"invalid IPv6Address {ipam_config['IPv6Address']!r}: network {network.name} "
            "has no IPv6 subnet, because ketch networks are IPv4 only"
        )

    mac = config.get("MacAddress") or None
    if mac is not None:
        mac = check_mac(mac)
    # Docker adds the short container id to Aliases; ketch keeps only the requested ones.
    return EndpointRequest(aliases=tuple(dict.fromkeys(aliases)), address=address, mac=mac)


def check_predefined_endpoint(config: Any) -> None:
    """Reject, in dockerd's wording, what only a user-defined network allows: a static
    address or an alias on the default bridge, host or none."""
    if not isinstance(config, dict):
        return
    ipam_config = _ipam_config(config)
    if ipam_config.get("IPv4Address") or ipam_config.get("IPv6Address"):
        raise InvalidArgument(
            "user specified IP address is supported on user defined networks only"
        )
    if config.get("Aliases"):
        raise InvalidArgument(
            "network-scoped alias is supported only for containers in user defined networks"
        )


def _ipam_config(config: dict[str, Any]) -> dict[str, Any]:
    ipam_config = config.get("IPAMConfig") or {}
    return ipam_config if isinstance(ipam_config, dict) else {}


def check_mac(text: str) -> str:
    """Return a MAC address in lower case; InvalidArgument when it is not one."""
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    ):
        raise InvalidArgument(
            f"invalid MacAddress {text!r}: expected six hex bytes, such as 02:42:ac:11:00:02"
        )
    if int(parts[0], 16) & 1:
        raise InvalidArgument(
            f"invalid MacAddress {text!r}: a multicast address cannot be an interface's"
        )
    return text.lower()


def planned_fields(network: Network, request: EndpointRequest) -> dict[str, Any]:
    """Return inspect fields of an endpoint not connected yet: what the client asked for."""
    return {
        "IPAMConfig": {"IPv4Address": str(request.address)} if request.address else None,
        "Aliases": list(request.aliases) or None,
        "NetworkID": network.id,
        "MacAddress": request.mac or "",
    }


def configured_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Return what the client configured of an endpoint's inspect fields: the network,
    aliases, requested address and requested MAC, without what a connect assigned."""
    mac = fields.get("MacAddress") or ""
    address = fields.get("IPAddress")
    if address and mac == ipam.mac_address(IPv4Address(address)):
        mac = ""  # derived from the assigned address, not requested
    return {
        "IPAMConfig": fields.get("IPAMConfig"),
        "Aliases": fields.get("Aliases"),
        "NetworkID": fields.get("NetworkID", ""),
        "MacAddress": mac,
    }


def remove_hosts_lines(hosts_path: Path, addresses: Iterable[str | None]) -> None:
    """Remove the lines of ``addresses`` from a container's /etc/hosts file, if it exists."""
    prefixes = tuple(f"{address}\t" for address in addresses if address)
    if not prefixes or not hosts_path.exists():
        return
    with hosts_path.open("r+") as hosts:
        lines = hosts.readlines()
        remaining = [line for line in lines if not line.startswith(prefixes)]
        if remaining != lines:
            # Rewritten in place, because a rename would leave the container's bind mount
            # on the old file.
            hosts.seek(0)
            hosts.writelines(remaining)
            hosts.truncate()
