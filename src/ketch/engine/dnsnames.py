"""Engine glue for ketchd's network name server: which names resolve for which container.

A client gets the names of running containers on every user-defined network that the
client's own container is connected to, as docker's embedded server scopes names. A client
that is not a known container (ketchd itself, or a container whose endpoint was just
removed) gets the names on the network it sent the query to. Each container resolves by its
name, its aliases on that network, its short id (12 hex digits) and its full id. The
default ``bridge`` network has no name resolution, as in docker. Other names are forwarded
to the servers of the client container's Dns option, or else to ketchd's upstreams.

The names come from the container store and the network store on every query, so a rename,
a stop or a disconnect shows in the next answer.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

from ketch.engine.containers import ContainerService
from ketch.engine.networking import ContainerNetworking
from ketch.engine.resolvconf import DnsSettings, ResolvConfRenderer
from ketch.engine.store import ContainerStore
from ketch.network.bridge import DEFAULT_NETWORK
from ketch.network.dns import NameRecord, NameServer, Upstream, parse_upstreams
from ketch.network.store import Endpoint, Network

logger = logging.getLogger(__name__)

SHORT_ID_LENGTH = 12


class ContainerNames:
    """The ``NameLookup`` of the name server: records of running containers."""

    def __init__(self, store: ContainerStore, networking: ContainerNetworking) -> None:
        self._store = store
        self._networking = networking

    def __call__(self, network: Network, client: IPv4Address | None) -> list[NameRecord]:
        networks = {
            candidate.id: candidate
            for candidate in self._networking.networks()
            if candidate.name != DEFAULT_NETWORK
        }
        endpoints = {network_id: self._networking.endpoints(network_id) for network_id in networks}
        records = []
        for network_id in self._scope(network, client, endpoints):
            for endpoint in endpoints.get(network_id, []):
                record = self._record(endpoint, networks[network_id])
                if record is not None:
                    records.append(record)
        return records

    def upstreams_of(self, network: Network, client: IPv4Address | None) -> list[Upstream]:
        """Return the servers of the client container's Dns option, or [] without one.

        ketchd sends the forwarded query from its own network namespace, so a loopback
        address here is the host's loopback. Docker's server would use the container's.
        """
        for endpoint in self._networking.endpoints(network.id):
            if endpoint.address != client:
                continue
            container = self._store.get(endpoint.container_id)
            servers = container.host_config.get("Dns") if container is not None else None
            # Checked at create, so an invalid entry here comes from an older record.
            return parse_upstreams(servers or [])
        return []

    @staticmethod
    def _scope(
        network: Network, client: IPv4Address | None, endpoints: dict[str, list[Endpoint]]
    ) -> list[str]:
        """Return the ids of the networks whose names ``client`` gets."""
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


def attach_name_server(
    containers: ContainerService,
    store: ContainerStore,
    networking: ContainerNetworking,
    settings: DnsSettings,
) -> NameServer:
    """Make the name server, register it as a network service, and have ``containers``
    write resolv.conf files that name it. The caller closes the server at shutdown."""
    # Limitation: the host's resolv.conf is read once here, so ketchd forwards to the old
    # servers after it changes, until ketchd restarts.
    upstreams = parse_upstreams(settings.upstream_servers())
    if not upstreams:
        logger.warning(
            "no DNS servers to forward to: neither a dns setting nor nameservers in %s; "
            "containers on user-defined networks resolve only container names",
            settings.host_resolv_conf,
        )
    names = ContainerNames(store, networking)
    server = NameServer(names, upstreams, client_upstreams=names.upstreams_of)
    networking.services.append(server)
    containers.resolv_conf = ResolvConfRenderer(settings, networking.networks)
    return server
