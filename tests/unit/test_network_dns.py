"""The network name server against real sockets on 127.0.0.1, with a fake lookup and a fake
upstream server on another loopback port."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from ketch.errors import InvalidArgument, SystemFailure
from ketch.network import dns as dns_server
from ketch.network.dns import NameRecord, NameServer, find_addresses, parse_upstreams
from ketch.network.store import Network
from support.dns_upstream import free_port, upstream_server

NETWORK = Network(
    id="f" * 64,
    name="front",
    driver="bridge",
    subnet=IPv4Network("127.0.0.0/8"),
    gateway=IPv4Address("127.0.0.1"),
    bridge="br-ffffffffffff",
)
WEB = NameRecord(IPv4Address("172.20.0.2"), ("web", "www", "0123456789ab"), "front")
DB = NameRecord(IPv4Address("172.21.0.2"), ("db",), "back")
TIMEOUT = 5.0


class FakeLookup:
    def __init__(self, records: list[NameRecord]) -> None:
        self.records = records
        self.calls: list[tuple[str, IPv4Address | None]] = []

    def __call__(self, network: Network, client: IPv4Address | None) -> list[NameRecord]:
        self.calls.append((network.name, client))
        return self.records


def serve(
    scenario: Callable[[int], Awaitable[Any]],
    lookup: FakeLookup | None = None,
    upstreams: list[tuple[str, int]] | None = None,
    network: Network = NETWORK,
    upstream_timeout: float = 2.0,
) -> Any:
    """Run ``scenario(port)`` while a NameServer serves ``network`` on 127.0.0.1:port."""
    port = free_port()
    server = NameServer(lookup or FakeLookup([WEB, DB]), upstreams or [], port, upstream_timeout)

    async def main() -> Any:
        await server.network_up(network)
        try:
            return await scenario(port)
        finally:
            await server.close()

    return asyncio.run(main())


def ask_udp(name: str, rdtype: str = "A", **make: Any) -> Callable[[int], Awaitable[Any]]:
    async def scenario(port: int) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, **make)
        return await dns.asyncquery.udp(query, "127.0.0.1", TIMEOUT, port)

    return scenario


def ask_tcp(name: str, rdtype: str = "A") -> Callable[[int], Awaitable[Any]]:
    async def scenario(port: int) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        return await dns.asyncquery.tcp(query, "127.0.0.1", TIMEOUT, port)

    return scenario


def addresses(response: dns.message.Message) -> list[str]:
    return [item.address for rrset in response.answer for item in rrset]


def test_container_name_answered() -> None:
    response = serve(ask_udp("web"))
    assert addresses(response) == ["172.20.0.2"]


def test_answer_is_authoritative() -> None:
    response = serve(ask_udp("web"))
    assert response.flags & dns.flags.AA


def test_alias_answered() -> None:
    response = serve(ask_udp("www"))
    assert addresses(response) == ["172.20.0.2"]


def test_short_id_answered() -> None:
    response = serve(ask_udp("0123456789ab"))
    assert addresses(response) == ["172.20.0.2"]


def test_name_with_network_answered() -> None:
    response = serve(ask_udp("web.front"))
    assert addresses(response) == ["172.20.0.2"]


def test_name_case_ignored() -> None:
    response = serve(ask_udp("WeB.FRONT."))
    assert addresses(response) == ["172.20.0.2"]


def test_name_with_other_network_unknown() -> None:
    assert find_addresses([WEB, DB], "web.back") == []


def test_same_name_two_records_both_returned() -> None:
    other = NameRecord(IPv4Address("172.20.0.3"), ("web",), "front")
    found = find_addresses([WEB, other, WEB], "web")
    assert found == [IPv4Address("172.20.0.2"), IPv4Address("172.20.0.3")]


def test_known_name_aaaa_empty() -> None:
    response = serve(ask_udp("web", "AAAA"))
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_container_answer_over_tcp() -> None:
    response = serve(ask_tcp("db"))
    assert addresses(response) == ["172.21.0.2"]


def test_pointer_of_container_address() -> None:
    name = dns.reversename.from_address("172.20.0.2").to_text()
    response = serve(ask_udp(name, "PTR"))
    assert [item.target.to_text() for item in response.answer[0]] == ["web.front."]


def test_lookup_gets_client_address() -> None:
    lookup = FakeLookup([WEB])
    serve(ask_udp("web"), lookup=lookup)
    assert lookup.calls == [("front", IPv4Address("127.0.0.1"))]


def test_unknown_name_forwarded_upstream() -> None:
    with upstream_server({"example.test.": ["192.0.2.10"]}) as upstream:
        response = serve(ask_udp("example.test"), upstreams=[(upstream.address, upstream.port)])
    assert addresses(response) == ["192.0.2.10"]
    assert upstream.queries == [("example.test.", "udp")]


def test_upstream_nxdomain_passed_on() -> None:
    with upstream_server({}) as upstream:
        response = serve(ask_udp("nothing.test"), upstreams=[(upstream.address, upstream.port)])
    assert response.rcode() == dns.rcode.NXDOMAIN


def test_truncated_upstream_retried_over_tcp() -> None:
    records = {"big.test.": ["192.0.2.1", "192.0.2.2"]}
    with upstream_server(records, truncated_names={"big.test."}) as upstream:
        response = serve(ask_udp("big.test"), upstreams=[(upstream.address, upstream.port)])
    assert sorted(addresses(response)) == ["192.0.2.1", "192.0.2.2"]
    assert upstream.queries == [("big.test.", "udp"), ("big.test.", "tcp")]


def test_tcp_query_forwarded_over_tcp() -> None:
    with upstream_server({"example.test.": ["192.0.2.10"]}) as upstream:
        response = serve(ask_tcp("example.test"), upstreams=[(upstream.address, upstream.port)])
    assert addresses(response) == ["192.0.2.10"]
    assert upstream.queries == [("example.test.", "tcp")]


def test_large_answer_truncated_for_udp_client() -> None:
    many = [f"192.0.2.{index}" for index in range(1, 60)]
    with upstream_server({"many.test.": many}, truncated_names={"many.test."}) as upstream:
        response = serve(ask_udp("many.test"), upstreams=[(upstream.address, upstream.port)])
    assert response.flags & dns.flags.TC


def test_client_dns_option_used_first() -> None:
    with upstream_server({"example.test.": ["192.0.2.10"]}) as upstream:
        port = free_port()
        calls = []

        def client_upstreams(network: Network, client: IPv4Address | None):
            calls.append((network.name, client))
            return [(upstream.address, upstream.port)]

        server = NameServer(FakeLookup([]), [], port, 2.0, client_upstreams)

        async def main() -> dns.message.Message:
            await server.network_up(NETWORK)
            try:
                return await ask_udp("example.test")(port)
            finally:
                await server.close()

        response = asyncio.run(main())
    assert addresses(response) == ["192.0.2.10"]
    assert calls == [("front", IPv4Address("127.0.0.1"))]


def test_second_upstream_used_when_first_silent() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent_upstream = ("127.0.0.1", silent.getsockname()[1])
    try:
        with upstream_server({"example.test.": ["192.0.2.10"]}) as upstream:
            response = serve(
                ask_udp("example.test"),
                upstreams=[silent_upstream, (upstream.address, upstream.port)],
                upstream_timeout=0.3,
            )
    finally:
        silent.close()
    assert addresses(response) == ["192.0.2.10"]


def test_silent_upstream_gives_servfail() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        response = serve(
            ask_udp("example.test"),
            upstreams=[("127.0.0.1", silent.getsockname()[1])],
            upstream_timeout=0.3,
        )
    finally:
        silent.close()
    assert response.rcode() == dns.rcode.SERVFAIL


def test_no_upstream_gives_servfail() -> None:
    response = serve(ask_udp("example.test"))
    assert response.rcode() == dns.rcode.SERVFAIL


def test_internal_network_not_forwarded() -> None:
    internal = replace(NETWORK, internal=True)
    with upstream_server({"example.test.": ["192.0.2.10"]}) as upstream:
        response = serve(
            ask_udp("example.test"),
            upstreams=[(upstream.address, upstream.port)],
            network=internal,
        )
    assert response.rcode() == dns.rcode.SERVFAIL
    assert upstream.queries == []


def test_internal_network_answers_names() -> None:
    response = serve(ask_udp("web"), network=replace(NETWORK, internal=True))
    assert addresses(response) == ["172.20.0.2"]


def test_malformed_query_gets_formerr() -> None:
    async def scenario(port: int) -> bytes:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setblocking(False)
            await loop.sock_connect(client, ("127.0.0.1", port))
            # A header that announces one question, followed by no question.
            await loop.sock_sendall(client, struct.pack("!HHHHHH", 4242, 0x0100, 1, 0, 0, 0))
            return await asyncio.wait_for(loop.sock_recv(client, 512), TIMEOUT)

    reply = serve(scenario)
    query_id, flags = struct.unpack("!HH", reply[:4])
    assert query_id == 4242
    assert flags & 0x000F == dns.rcode.FORMERR


def test_default_network_not_served() -> None:
    server = NameServer(FakeLookup([]), [])
    asyncio.run(server.network_up(replace(NETWORK, name="bridge")))
    assert not server.listening(NETWORK.id)


def test_network_down_frees_port() -> None:
    port = free_port()

    async def main() -> None:
        server = NameServer(FakeLookup([]), [], port)
        await server.network_up(NETWORK)
        await server.network_down(NETWORK)
        # Binding again works only once both listeners are closed.
        await server.network_up(NETWORK)
        await server.close()

    asyncio.run(main())


def test_taken_port_raises_system_failure() -> None:
    with upstream_server({}) as taken:
        server = NameServer(FakeLookup([]), [], taken.port)
        with pytest.raises(SystemFailure, match="front"):
            asyncio.run(server.network_up(NETWORK))


def test_upstreams_parsed_with_port_53() -> None:
    assert parse_upstreams(["127.0.0.1", "::1"]) == [("127.0.0.1", 53), ("::1", 53)]


def test_upstream_not_address_rejected() -> None:
    with pytest.raises(InvalidArgument, match="resolver.test"):
        parse_upstreams(["resolver.test"])


def test_tcp_connections_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dns_server, "MAX_TCP_CONNECTIONS", 1)

    async def scenario(port: int) -> tuple[bytes, dns.message.Message]:
        # The first connection stays open and idle, so it takes the only slot.
        _, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            closed = await asyncio.wait_for(reader.read(), TIMEOUT)
        finally:
            writer.close()
        idle_writer.close()
        # With the slot free again, a query over TCP gets a reply. The server frees the slot
        # once it reads the end of the idle connection, so the first tries may be closed.
        for _ in range(50):
            try:
                return closed, await ask_tcp("web")(port)
            except (EOFError, ConnectionError):
                await asyncio.sleep(0.1)
        raise AssertionError("the TCP slot was not freed")

    closed, response = serve(scenario)
    assert closed == b""
    assert addresses(response) == ["172.20.0.2"]
