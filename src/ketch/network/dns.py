"""The name server that ketchd runs for user-defined networks.

When a user-defined network comes up, the server listens on that network's gateway address,
port 53, over UDP and TCP. Containers on the network name that address in their
/etc/resolv.conf. The default ``bridge`` network gets no listener, as with docker.

A query is resolved in this order:

    container names   A records for the names, aliases and ids that the lookup returns for
                      the client, with ``NAME.NETWORK`` forms too. AAAA and other types for
                      such a name get an empty answer (NOERROR), because containers here
                      have no IPv6 addresses.
    container PTRs    ``in-addr.arpa`` names of those containers' addresses
    everything else   forwarded to the upstream servers in order (the client container's
                      Dns option, or else the server's list): over UDP (retried over TCP
                      when the answer is truncated) for a UDP query, over TCP for a TCP one.
                      SERVFAIL when no upstream answers, when none is configured, or when
                      the network is internal.

The lookup is a callback from the engine, so a rename or a stop shows in the next answer.
This module owns the listeners. ``ketch.network.dns_queries``, which needs dnspython, parses
and answers the queries. It is imported only when the first listener opens.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from typing import Any, cast

from ketch.errors import InvalidArgument, SystemFailure
from ketch.network.store import Network

logger = logging.getLogger(__name__)

DNS_PORT = 53
DEFAULT_NETWORK = "bridge"
# The TTL of answers for containers, in seconds: docker's embedded server (libnetwork's
# resolver.go, respTTL) uses the same.
ANSWER_TTL = 600
# Per upstream server and attempt, in seconds.
UPSTREAM_TIMEOUT = 3.0
# A TCP client that sends nothing for this long, in seconds, is disconnected.
TCP_IDLE_TIMEOUT = 10.0
# Queries in progress at once per network. UDP queries beyond it are dropped, so a flood cannot
# grow ketchd's memory without bound. Clients retry a dropped query.
MAX_PENDING_QUERIES = 256
# Open TCP connections per network; a connection beyond it is closed at once.
MAX_TCP_CONNECTIONS = 64
# The largest UDP answer for a client that does not announce a size with EDNS (RFC 1035).
CLASSIC_UDP_SIZE = 512
# An upstream's failures are logged at most once in this many seconds.
FAILURE_LOG_INTERVAL = 60.0

Upstream = tuple[str, int]


@dataclass(frozen=True)
class NameRecord:
    """A container's address on one network and the names that resolve to it there."""

    address: IPv4Address
    names: tuple[str, ...]
    network_name: str


# Returns the records visible to a client that sent a query to ``network``'s server, from the
# client's address (None when it is not an IPv4 address).
NameLookup = Callable[[Network, IPv4Address | None], list[NameRecord]]
# Returns the upstream servers that a client's container names with its own Dns option, or
# an empty list when the server's upstreams apply.
UpstreamLookup = Callable[[Network, IPv4Address | None], list[Upstream]]


def find_addresses(records: Sequence[NameRecord], query_name: str) -> list[IPv4Address]:
    """Return the addresses of the records that ``query_name`` names, in record order.

    Names compare without case. ``NAME.NETWORK`` matches NAME on the network so named.
    """
    name = query_name.rstrip(".").lower()
    addresses: list[IPv4Address] = []
    for record in records:
        names = {candidate.lower() for candidate in record.names}
        suffix = "." + record.network_name.lower()
        bare = name.removesuffix(suffix) if name.endswith(suffix) else None
        if (name in names or bare in names) and record.address not in addresses:
            addresses.append(record.address)
    return addresses


def parse_upstreams(servers: Sequence[str]) -> list[Upstream]:
    """Return (address, 53) for each server, as dockerd's ``dns`` setting lists them."""
    upstreams = []
    for server in servers:
        try:
            address = ip_address(server)
        except ValueError:
            raise InvalidArgument(
                f"invalid DNS server {server!r}: expected an IP address"
            ) from None
        upstreams.append((str(address), DNS_PORT))
    return upstreams


def _client_address(peer: tuple[str, int] | None) -> IPv4Address | None:
    try:
        address = ip_address(peer[0]) if peer else None
    except ValueError:
        return None
    return address if isinstance(address, IPv4Address) else None


class _UpstreamFailures:
    """Failed forwards per upstream, logged at most once per ``FAILURE_LOG_INTERVAL`` each."""

    def __init__(self) -> None:
        self._last_logged: dict[Upstream, float] = {}
        self._suppressed: dict[Upstream, int] = {}

    def record(self, upstream: Upstream, error: BaseException) -> None:
        now = time.monotonic()
        last = self._last_logged.get(upstream)
        if last is not None and now - last < FAILURE_LOG_INTERVAL:
            self._suppressed[upstream] = self._suppressed.get(upstream, 0) + 1
            return
        suppressed = self._suppressed.pop(upstream, 0)
        self._last_logged[upstream] = now
        logger.warning(
            "DNS server %s:%d failed to reply to a forwarded query: %s (%d more failures since "
            "the last message)",
            upstream[0],
            upstream[1],
            str(error) or type(error).__name__,
            suppressed,
        )


class NameServer:
    """The DNS listeners of ketchd's user-defined networks, used from the event loop.

    A ``NetworkService``: the engine calls ``network_up`` and ``network_down``.
    """

    def __init__(
        self,
        lookup: NameLookup,
        upstreams: Sequence[Upstream],
        port: int = DNS_PORT,
        timeout: float = UPSTREAM_TIMEOUT,
        client_upstreams: UpstreamLookup | None = None,
    ) -> None:
        self.lookup = lookup
        self.upstreams = list(upstreams)
        self.client_upstreams = client_upstreams
        self._port = port
        self.timeout = timeout
        self._listeners: dict[str, _Listeners] = {}
        self.failures = _UpstreamFailures()

    def listening(self, network_id: str) -> bool:
        return network_id in self._listeners

    async def network_up(self, network: Network) -> None:
        """Listen on the network's gateway address; the default network gets no listener."""
        if network.name == DEFAULT_NETWORK:
            return
        current = self._listeners.get(network.id)
        if current is not None and current.network.gateway == network.gateway:
            return
        if current is not None:
            await self.network_down(network)
        # Imported before the first query arrives, so that no query waits for dnspython.
        import ketch.network.dns_queries  # noqa: F401

        self._listeners[network.id] = await _Listeners.open(self, network, self._port)
        logger.info(
            "serving DNS for network %s on %s:%d", network.name, network.gateway, self._port
        )

    async def network_down(self, network: Network) -> None:
        listeners = self._listeners.pop(network.id, None)
        if listeners is not None:
            await listeners.close()
            logger.info("stopped serving DNS for network %s", network.name)

    async def close(self) -> None:
        for listeners in list(self._listeners.values()):
            await self.network_down(listeners.network)

    async def answer(
        self, network: Network, wire: bytes, client: IPv4Address | None, over_tcp: bool
    ) -> bytes | None:
        """Return the wire-format response to the query ``wire``, or None to send nothing."""
        from ketch.network import dns_queries

        return await dns_queries.answer(self, network, wire, client, over_tcp)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: NameServer, network: Network) -> None:
        self._server = server
        self._network = network
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._dropped = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, peer: tuple[str, int]) -> None:
        if len(self._pending) >= MAX_PENDING_QUERIES:
            self._dropped += 1
            if self._dropped % MAX_PENDING_QUERIES == 1:
                logger.warning(
                    "dropped %d DNS queries on network %s: %d are already pending",
                    self._dropped,
                    self._network.name,
                    MAX_PENDING_QUERIES,
                )
            return
        task = asyncio.get_running_loop().create_task(self._reply(data, peer))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _reply(self, data: bytes, peer: tuple[str, int]) -> None:
        try:
            response = await self._server.answer(
                self._network, data, _client_address(peer), over_tcp=False
            )
        except Exception:
            logger.exception("failed to answer a DNS query from %s on %s", peer, self._network.name)
            return
        if response is not None and self._transport is not None:
            self._transport.sendto(response, peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def cancel_pending(self) -> None:
        for task in self._pending:
            task.cancel()


class _Listeners:
    """The UDP endpoint and TCP server of one network, and the TCP connections they serve."""

    def __init__(self, server: NameServer, network: Network) -> None:
        self.network = network
        self._server = server
        self._udp: asyncio.DatagramTransport | None = None
        self._protocol: _UdpProtocol | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, server: NameServer, network: Network, port: int) -> _Listeners:
        """Bind UDP and TCP on the network's gateway address, or raise SystemFailure."""
        listeners = cls(server, network)
        address = str(network.gateway)
        try:
            await listeners._bind(address, port)
        except OSError as error:
            await listeners.close()
            raise SystemFailure(
                f"cannot serve DNS for network {network.name} on {address}:{port}: {error}"
            ) from error
        return listeners

    async def _bind(self, address: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._udp, self._protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._server, self.network), local_addr=(address, port)
        )
        self._tcp = await asyncio.start_server(self._serve_connection, address, port)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(self._connections) >= MAX_TCP_CONNECTIONS:
            logger.warning(
                "closed a DNS connection from %s on network %s: %d are already open",
                writer.get_extra_info("peername"),
                self.network.name,
                MAX_TCP_CONNECTIONS,
            )
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await _serve_tcp_client(self._server, self.network, reader, writer)
        finally:
            self._connections.discard(task)  # type: ignore[arg-type]

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._protocol is not None:
            self._protocol.cancel_pending()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._connections):
            task.cancel()
        if self._tcp is not None:
            await self._tcp.wait_closed()
        # The transport closes its socket on a later turn of the loop, and the port stays
        # taken until then.
        if self._protocol is not None:
            await self._protocol.closed


async def _serve_tcp_client(
    server: NameServer,
    network: Network,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Answer length-prefixed queries (RFC 1035 section 4.2.2) until the client closes or
    idles."""
    client = _client_address(writer.get_extra_info("peername"))
    try:
        while True:
            async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                wire = await reader.readexactly(length)
            response = await server.answer(network, wire, client, over_tcp=True)
            if response is None:
                break
            writer.write(struct.pack("!H", len(response)) + response)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
