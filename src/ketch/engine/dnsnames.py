"""Engine glue for ketchd's network name server: which names resolve for which container.

A client gets the names of running containers on every user-defined network that the
client's own container is connected to, as docker's embedded server scopes names. A client
that is not a known container (ketchd itself, or a container whose endpoint was just
removed) gets the names on the network it sent the query to. A client outside that
network's subnet gets no names. Each container resolves by its name, its aliases on that
network, its short id (12 hex digits) and its full id. The default ``bridge`` network has
no name resolution, as in docker. Other names are forwarded to the servers of the client
container's Dns option, or else to ketchd's upstreams.

The networks and endpoints are read from the network store once and kept until the store's
generation changes, which every write to its tables does (a connect, a disconnect, a network
create or remove). The containers' names and states are read from the container store's
in-memory objects on every query. So a rename, a stop or a disconnect shows in the next
reply, and a query reads nothing from SQLite while the networks stay the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from ipaddress import IPv4Address

from ketch.engine.engine import Engine
from ketch.engine.hostconfig import HostOptions
from ketch.engine.networking import ContainerNetworking
from ketch.engine.resolvconf import DnsSettings, ResolvConfRenderer
from ketch.engine.store import Container, ContainerStore
from ketch.errors import KetchError
from ketch.network.bridge import DEFAULT_NETWORK
from ketch.network.dns import NameRecord, NameServer, Upstream, parse_upstreams
from ketch.network.store import Endpoint, Network

logger = logging.getLogger(__name__)

SHORT_ID_LENGTH = 12

# The user-defined networks by id, and their endpoints by network id.
NetworkTable = tuple[dict[str, Network], dict[str, list[Endpoint]]]


class HostUpstreams:
    """The servers to forward to when a container names none: the ``dns`` setting, or else
    the host's nameservers, read again whenever the host's resolv.conf changes."""

    def __init__(self, settings: DnsSettings) -> None:
        self._settings = settings
        self._stamp: tuple[int, int, int] | None = None
        self._upstreams: list[Upstream] = []
        self._read = False

    def __call__(self) -> list[Upstream]:
        stamp = None if self._settings.servers else self._file_stamp()
        if self._read and stamp == self._stamp:
            return self._upstreams
        self._stamp = stamp
        self._read = True
        self._upstreams = parse_upstreams(self._settings.upstream_servers())
        if self._upstreams:
            servers = ", ".join(address for address, _ in self._upstreams)
            logger.info("forwarding DNS queries for other names to %s", servers)
        else:
            logger.warning(
                "no DNS servers to forward to: neither a dns setting nor nameservers in %s; "
                "containers on user-defined networks resolve only container names",
                self._settings.host_resolv_conf,
            )
        return self._upstreams

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            status = self._settings.host_resolv_conf.stat()
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)


class ContainerNames:
    """The ``NameLookup`` of the name server: records of running containers.

    ``network_generation`` returns the network store's generation. With it, the networks
    and endpoints are cached until it changes; without it, every query reads them.
    """

    def __init__(
        self,
        store: ContainerStore,
        networking: ContainerNetworking,
        default_upstreams: Callable[[], list[Upstream]] = list,
        network_generation: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._networking = networking
        self._default_upstreams = default_upstreams
        self._network_generation = network_generation
        self._cached_generation: int | None = None
        self._cached_table: NetworkTable | None = None

    def __call__(self, network: Network, client: IPv4Address | None) -> list[NameRecord]:
        networks, endpoints = self._network_table()
        records = []
        for network_id in self._scope(network, client, endpoints):
            for endpoint in endpoints.get(network_id, []):
                record = self._record(endpoint, networks[network_id])
                if record is not None:
                    records.append(record)
        return records

    def upstreams_of(self, network: Network, client: IPv4Address | None) -> list[Upstream]:
        """Return the servers of the client container's Dns option, or else the default
        upstreams.

        ketchd sends the forwarded query from its own network namespace, so a loopback
        address here is the host's loopback. Docker's server would use the container's.
        """
        _, endpoints = self._network_table()
        network_endpoints = endpoints.get(network.id)
        if network_endpoints is None:
            network_endpoints = self._networking.endpoints(network.id)
        for endpoint in network_endpoints:
            if endpoint.address != client:
                continue
            container = self._store.get(endpoint.container_id)
            servers = container.host_config.get("Dns") if container is not None else None
            if servers:
                # Checked at create, so an invalid entry here comes from an older record.
                return parse_upstreams(servers)
            break
        return self._default_upstreams()

    def _network_table(self) -> NetworkTable:
        """Return the user-defined networks and their endpoints, from the cache while the
        network store's generation is the one they were read at."""
        generation = self._network_generation() if self._network_generation else None
        cached = self._cached_table
        if cached is not None and generation is not None and generation == self._cached_generation:
            return cached

        networks = {
            candidate.id: candidate
            for candidate in self._networking.networks()
            if candidate.name != DEFAULT_NETWORK
        }
        endpoints = {network_id: self._networking.endpoints(network_id) for network_id in networks}

        self._cached_generation = generation
        self._cached_table = (networks, endpoints)
        return networks, endpoints

    @staticmethod
    def _scope(
        network: Network, client: IPv4Address | None, endpoints: dict[str, list[Endpoint]]
    ) -> list[str]:
        """Return the ids of the networks whose names ``client`` gets."""
        if client is None or client not in network.subnet:
            # A container on another network reaches this gateway address through its own
            # gateway, and must not learn the names on this one.
            return []
        client_id = next(
            (e.container_id for e in endpoints.get(network.id, []) if e.address == client), None
        )
        if client_id is None:
            return [network.id]
        return [
            network_id
            for network_id, network_endpoints in endpoints.items()
            if any(endpoint.container_id == client_id for endpoint in network_endpoints)
        ]

    def _record(self, endpoint: Endpoint, network: Network) -> NameRecord | None:
        container = self._store.get(endpoint.container_id)
        if container is None or not container.running:
            return None
        names = (
            container.name.lstrip("/"),
            *endpoint.aliases,
            container.id[:SHORT_ID_LENGTH],
            container.id,
        )
        return NameRecord(endpoint.address, names, network.name)


class ResolvConfUpdater:
    """The rewriting of a container's resolv.conf after it joins or leaves a network. It
    follows the connect and disconnect events, so that the file names the server of a
    user-defined network that the container is still on."""

    def __init__(self, engine: Engine, renderer: ResolvConfRenderer) -> None:
        self._engine = engine
        self._renderer = renderer
        self._subscription = engine.events.subscribe(
            {"type": ["network"], "event": ["connect", "disconnect"]}
        )
        self._task = asyncio.get_running_loop().create_task(self._follow_events())

    async def _follow_events(self) -> None:
        async for event in self._subscription.events():
            container_id = event["Actor"]["Attributes"].get("container", "")
            try:
                self.update(container_id)
            except (OSError, KetchError) as error:
                logger.error(
                    "failed to update resolv.conf of container %s: %s", container_id, error
                )

    def update(self, container_id: str) -> None:
        """Rewrite the container's resolv.conf if its networks call for other content."""
        container = self._engine.store.get(container_id)
        if container is None:
            return
        host_config = container.host_config
        host = HostOptions(
            dns=list(host_config.get("Dns") or []),
            dns_search=list(host_config.get("DnsSearch") or []),
            dns_options=list(host_config.get("DnsOptions") or []),
        )
        text = self._renderer.render(host, self._effective_mode(container))
        path = self._engine.paths.directory(container.id) / "resolv.conf"
        if not path.is_file() or path.read_text() == text:
            return
        # Written in place: the file is bind-mounted into the container, and a rename would
        # leave that mount on the old file.
        with path.open("w") as resolv_conf:
            resolv_conf.write(text)
        logger.info("updated resolv.conf of container %s for its networks", container.id)

    @staticmethod
    def _effective_mode(container: Container) -> str:
        """Return the network mode whose resolv.conf fits the container's networks now: its
        own user-defined network, or else another one it is on, or else the default."""
        mode = container.host_config.get("NetworkMode", "default")
        user_networks = [name for name in container.network_endpoints if name != DEFAULT_NETWORK]
        if mode in user_networks:
            return mode
        if user_networks:
            return user_networks[0]
        if mode in ("host", "none") or mode.startswith("container:"):
            return mode
        return "default"

    async def close(self) -> None:
        self._engine.events.unsubscribe(self._subscription)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class NameService:
    """The name server and the resolv.conf updates of one ketchd."""

    def __init__(self, server: NameServer, updater: ResolvConfUpdater) -> None:
        self.server = server
        self.updater = updater

    async def close(self) -> None:
        await self.updater.close()
        await self.server.close()


def attach_name_server(
    engine: Engine, networking: ContainerNetworking, settings: DnsSettings
) -> NameService:
    """Make the name server and register it as a network service. Have the engine's
    containers get resolv.conf files that name it, also after a connect or disconnect. The
    caller closes the returned service at shutdown."""
    host_upstreams = HostUpstreams(settings)
    network_store = networking.driver.store
    names = ContainerNames(
        engine.store,
        networking,
        host_upstreams,
        network_generation=lambda: network_store.generation,
    )
    server = NameServer(names, host_upstreams(), client_upstreams=names.upstreams_of)
    networking.services.append(server)
    renderer = ResolvConfRenderer(settings, networking.networks)
    engine.containers.resolv_conf = renderer
    return NameService(server, ResolvConfUpdater(engine, renderer))
