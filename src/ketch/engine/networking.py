"""Engine glue for container networking: which containers get a bridge endpoint, and the
container's /etc/hosts line for its own address.

The engine pins a network namespace for each bridge container at
``<exec_root>/netns/<id>`` and names that path in the spec's ``linux.namespaces``. So the
runtime joins a namespace that is already wired, and the engine need not move a veth into
the init's namespace between the runtime's create and start. The endpoint lives from the
first start until the container is removed.

NOTE: a stopped container keeps its address until it is removed.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from ketch.errors import SystemFailure
from ketch.network.bridge import DEFAULT_NETWORK, BridgeDriver
from ketch.network.store import Endpoint, NetworkStore

logger = logging.getLogger(__name__)

BRIDGE_MODES = ("default", "bridge")


class ContainerNetworking:
    """Bridge endpoints of containers, used from the event loop."""

    def __init__(self, db: Any, exec_root: Path) -> None:
        self.driver = BridgeDriver(NetworkStore(db), exec_root / "netns")

    def namespace_path(self, container_id: str, network_mode: str) -> Path | None:
        """Return the namespace the spec joins, or None when the runtime makes its own."""
        if network_mode not in BRIDGE_MODES:
            return None
        return self.driver.namespace_path(container_id)

    async def connect(self, container_id: str, hostname: str, hosts_path: Path) -> dict[str, Any]:
        """Connect the container to ``bridge``, name its address in its /etc/hosts, and
        return the endpoint's fields for inspect, keyed by network name."""
        try:
            endpoint = await self.driver.connect(container_id)
        except (OSError, NetlinkError) as error:
            raise SystemFailure(
                f"cannot connect container {container_id} to network bridge: {error}"
            ) from error
        line = f"{endpoint.address}\t{hostname}\n"
        text = hosts_path.read_text() if hosts_path.exists() else ""
        if line not in text:
            # Written in place: the file is bind-mounted into a container that may have run
            # before, and a rename would leave that mount on the old file.
            with hosts_path.open("a") as hosts:
                hosts.write(line)
        return {DEFAULT_NETWORK: self._inspect_fields(endpoint)}

    def _inspect_fields(self, endpoint: Endpoint) -> dict[str, Any]:
        network = self.driver.network_of(endpoint)
        endpoint_key = f"{endpoint.network_id}/{endpoint.container_id}".encode()
        return {
            "NetworkID": network.id,
            # Docker's endpoint IDs are random. This one is derived, so it needs no column.
            "EndpointID": hashlib.sha256(endpoint_key).hexdigest(),
            "Gateway": str(network.gateway),
            "IPAddress": str(endpoint.address),
            "IPPrefixLen": network.subnet.prefixlen,
            "MacAddress": endpoint.mac,
            "SandboxKey": str(self.driver.namespace_path(endpoint.container_id)),
        }

    async def disconnect(self, container_id: str) -> None:
        """Remove the container's endpoint; a failure is logged so that removal goes on."""
        try:
            await self.driver.disconnect(container_id)
        except (OSError, NetlinkError, SystemFailure) as error:
            logger.error("cannot disconnect container %s from its network: %s", container_id, error)

    async def remove_stale(self, container_ids: set[str]) -> None:
        """Disconnect endpoints and namespaces of containers that no longer exist, which a
        crash of ketchd between a removal's steps can leave behind."""
        for container_id in self.driver.connected_containers() - container_ids:
            logger.warning("removing the network endpoint of gone container %s", container_id)
            await self.disconnect(container_id)
