"""Published ports of running containers: their host sockets, proxies and records.

A container's ports are bound when it starts, after its network endpoint exists, and
released when it exits, fails to start or is removed. Proxies live in ketchd, so they
end with it. The records let the next ketchd bind the same host ports again for the
containers that kept running meanwhile. With ketchd's ``userland-proxy`` false, the host
sockets are only held open and the firewall's dnat rules forward the ports instead.

Table (each change is one transaction)::

    network_ports   container id, container port, protocol, host IP, host port
"""

from __future__ import annotations

import logging
import socket
import sqlite3
from typing import TYPE_CHECKING, Any

from ketch.errors import KetchError
from ketch.network.firewall import Firewall, PortRule
from ketch.network.ports import (
    ALL_IPV4,
    BoundPort,
    PortBinder,
    PortRequest,
    exposed_port_keys,
    requested_bindings,
)

if TYPE_CHECKING:
    from ketch.network.portproxy import Proxy

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS network_ports (
    container_id TEXT NOT NULL,
    container_port INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    host_ip TEXT NOT NULL,
    host_port INTEGER NOT NULL
);
"""


def container_address(container: Any) -> tuple[str, str] | None:
    """Return the address of the container on its first network and that network's id, or
    None without one."""
    # A start connects the network of the NetworkMode first, so that one comes first here.
    for endpoint in container.network_endpoints.values():
        address = endpoint.get("IPAddress")
        if address:
            return str(address), str(endpoint.get("NetworkID", ""))
    return None


class HeldPort:
    """A bound host socket kept open while a kernel rule forwards its port, so that no
    other process can take the port meanwhile (libnetwork's portmapper keeps a dummyProxy
    listening for the same reason)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def start(self) -> None:
        pass

    def retarget(self, target: tuple[str, int]) -> None:
        pass  # the kernel rule that forwards the port names the target

    def close(self) -> None:
        self._sock.close()


class PublishedPorts:
    """The published ports of one engine's containers. Used from the event loop only."""

    def __init__(self, db: sqlite3.Connection, binder: PortBinder | None = None) -> None:
        self._db = db
        self._db.executescript(SCHEMA)
        self._binder = binder or PortBinder()
        self._active: dict[str, list[tuple[BoundPort, Proxy | HeldPort]]] = {}
        # With ketchd's "userland-proxy" false: the firewall that forwards ports instead of
        # proxies.
        self.kernel_rules: Firewall | None = None

    async def publish(self, container: Any) -> None:
        """Bind the container's host ports and start their proxies, or hand their dnat rules
        to ``kernel_rules`` when it is set.

        Raises Conflict when a host port is in use, and then leaves nothing bound.
        """
        requests = requested_bindings(container.host_config, container.config.get("ExposedPorts"))
        if not requests:
            return
        endpoint = container_address(container)
        if endpoint is None:
            # Docker also ignores published ports in network modes none and host.
            logger.info("container %s has no network address; publishing no ports", container.id)
            return
        self.release(container.id)
        await self._bind_all(container.id, requests, endpoint)

    async def _bind_all(
        self, container_id: str, requests: list[PortRequest], endpoint: tuple[str, str]
    ) -> None:
        address, network_id = endpoint
        active: list[tuple[BoundPort, Proxy | HeldPort]] = []
        self._active[container_id] = active
        try:
            for request in requests:
                bound, sock = self._binder.bind(request)
                await self._start_forwarding(active, bound, sock, address)
                if request.also_ipv6:
                    await self._bind_ipv6_too(active, bound, address)
            if self.kernel_rules is not None:
                rules = _port_rules(active, address, network_id)
                await self.kernel_rules.set_port_rules(container_id, rules)
            self._record(container_id, [bound for bound, _ in active])
        except BaseException:
            self.release(container_id)
            raise
        for bound, _ in active:
            logger.info(
                "container %s: %s:%d/%s -> %s:%d",
                container_id,
                bound.host_ip,
                bound.host_port,
                bound.protocol,
                address,
                bound.container_port,
            )

    async def _start_forwarding(
        self,
        active: list[tuple[BoundPort, Proxy | HeldPort]],
        bound: BoundPort,
        sock: socket.socket,
        address: str,
    ) -> None:
        if self.kernel_rules is None:
            # Imported with the first published port, so that ketchd without one does not
            # load the proxy's code.
            from ketch.network.portproxy import make_proxy

            proxy: Proxy | HeldPort = make_proxy(
                bound.protocol, sock, (address, bound.container_port)
            )
        else:
            proxy = HeldPort(sock)
        active.append((bound, proxy))
        await proxy.start()

    async def _bind_ipv6_too(
        self, active: list[tuple[BoundPort, Proxy | HeldPort]], bound: BoundPort, address: str
    ) -> None:
        """Bind "::" on the port just bound on 0.0.0.0, as dockerd 20.10 does for an empty
        HostIp. On a host without IPv6, or with the port in use on IPv6 only, it stays IPv4."""
        if self.kernel_rules is not None:
            return  # the dnat rules are in an "ip" table, so they forward IPv4 only
        request = PortRequest(
            bound.container_port, bound.protocol, "::", bound.host_port, bound.host_port
        )
        try:
            ipv6_bound, sock = self._binder.bind(request)
        except KetchError as error:
            logger.debug("publishing %s on IPv4 only: %s", bound.key, error)
            return
        await self._start_forwarding(active, ipv6_bound, sock, address)

    async def follow_address(self, container: Any) -> None:
        """Forward the running container's published ports to its current address, after a
        disconnect took away the network they forwarded to. Raises SystemFailure when the
        kernel rules cannot be rewritten."""
        active = self._active.get(container.id)
        if not active:
            return
        endpoint = container_address(container)
        if endpoint is None:
            # NOTE: the host ports stay bound, with nothing behind them, until the container stops.
            logger.warning(
                "container %s is on no network now; its published ports forward nowhere",
                container.id,
            )
            return
        address, network_id = endpoint
        for bound, proxy in active:
            proxy.retarget((address, bound.container_port))
        if self.kernel_rules is not None:
            rules = _port_rules(active, address, network_id)
            await self.kernel_rules.set_port_rules(container.id, rules)
        logger.info("container %s: published ports now forward to %s", container.id, address)

    def release(self, container_id: str) -> None:
        """Close the container's proxies and forget its ports; nothing if it has none."""
        for bound, proxy in self._active.pop(container_id, []):
            proxy.close()
            self._binder.release(bound)
        if self.kernel_rules is not None:
            self.kernel_rules.remove_port_rules(container_id)
        self._db.execute("DELETE FROM network_ports WHERE container_id = ?", (container_id,))

    def close(self) -> None:
        """Close every proxy but keep the records, for the next ketchd to bind again."""
        for active in self._active.values():
            for bound, proxy in active:
                proxy.close()
                self._binder.release(bound)
        self._active.clear()

    async def restore(self, containers: list[Any]) -> None:
        """Bind the recorded ports of running containers again, after a restart of ketchd,
        and drop the records of the others."""
        running = {container.id: container for container in containers if container.running}
        recorded = self._recorded()
        for container_id, ports in recorded.items():
            container = running.get(container_id)
            endpoint = container_address(container) if container is not None else None
            if endpoint is None:
                self.release(container_id)
                continue
            requests = _restore_requests(ports)
            try:
                await self._bind_all(container_id, requests, endpoint)
            except KetchError as error:
                logger.error(
                    "failed to publish the ports of container %s again: %s; restart the "
                    "container to publish them",
                    container_id,
                    error,
                )

    def bound_ports(self, container_id: str) -> list[BoundPort]:
        return [bound for bound, _ in self._active.get(container_id, [])]

    def port_map(self, container: Any) -> dict[str, Any]:
        """Return inspect's NetworkSettings.Ports: exposed ports map to None, published
        ones to their host bindings. Empty unless the container is running."""
        if not container.running:
            return {}
        ports: dict[str, Any] = {}
        for key in self._port_keys(container):
            ports[key] = None
        for bound in self.bound_ports(container.id):
            host = {"HostIp": bound.host_ip, "HostPort": str(bound.host_port)}
            ports[bound.key] = (ports.get(bound.key) or []) + [host]
        return ports

    def summary_ports(self, container: Any) -> list[dict[str, Any]]:
        """Return the Ports of a ``GET /containers/json`` item, in docker's shape."""
        if not container.running:
            return []
        items: list[dict[str, Any]] = []
        published = set()
        for bound in self.bound_ports(container.id):
            published.add(bound.key)
            items.append(
                {
                    "IP": bound.host_ip,
                    "PrivatePort": bound.container_port,
                    "PublicPort": bound.host_port,
                    "Type": bound.protocol,
                }
            )
        for key in self._port_keys(container):
            if key not in published:
                port, _, protocol = key.partition("/")
                items.append({"PrivatePort": int(port), "Type": protocol})
        return items

    @staticmethod
    def _port_keys(container: Any) -> list[str]:
        try:
            return exposed_port_keys(container.config.get("ExposedPorts"))
        except KetchError:
            return []  # checked at create; an old record may hold anything

    def _record(self, container_id: str, ports: list[BoundPort]) -> None:
        rows = [(container_id, p.container_port, p.protocol, p.host_ip, p.host_port) for p in ports]
        # The engine's connection is in autocommit mode, so the replacement gets an explicit
        # transaction.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM network_ports WHERE container_id = ?", (container_id,))
            self._db.executemany("INSERT INTO network_ports VALUES (?, ?, ?, ?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _recorded(self) -> dict[str, list[BoundPort]]:
        rows = self._db.execute(
            "SELECT container_id, container_port, protocol, host_ip, host_port FROM network_ports"
        ).fetchall()
        recorded: dict[str, list[BoundPort]] = {}
        for container_id, container_port, protocol, host_ip, host_port in rows:
            recorded.setdefault(container_id, []).append(
                BoundPort(container_port, protocol, host_ip, host_port)
            )
        return recorded


def _port_rules(
    active: list[tuple[BoundPort, Proxy | HeldPort]], address: str, network_id: str
) -> list[PortRule]:
    return [
        PortRule(
            bound.protocol,
            bound.host_ip,
            bound.host_port,
            address,
            bound.container_port,
            network_id,
        )
        for bound, _ in active
    ]


def _restore_requests(ports: list[BoundPort]) -> list[PortRequest]:
    """Turn recorded ports into exact requests. A "::" port recorded beside the same
    0.0.0.0 port came from an empty HostIp, so it is bound again as ``also_ipv6``."""
    ipv4_all = {(p.container_port, p.protocol, p.host_port) for p in ports if p.host_ip == ALL_IPV4}
    ipv6_all = {(p.container_port, p.protocol, p.host_port) for p in ports if p.host_ip == "::"}
    requests = []
    for port in ports:
        key = (port.container_port, port.protocol, port.host_port)
        if port.host_ip == "::" and key in ipv4_all:
            continue
        also_ipv6 = port.host_ip == ALL_IPV4 and key in ipv6_all
        requests.append(
            PortRequest(
                port.container_port,
                port.protocol,
                port.host_ip,
                port.host_port,
                port.host_port,
                also_ipv6,
            )
        )
    return requests
