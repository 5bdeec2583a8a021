"""The dnspython side of ketchd's name server: parse a query, answer it from the container
records or forward it upstream, and render the response.

``ketch.network.dns`` imports this module when the first user-defined network's listener
opens, not at ketchd's start: dnspython costs ketchd about 3 MiB of memory, and a ketchd
without user-defined networks never answers a query.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, ip_address

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from ketch.network.dns import (
    ANSWER_TTL,
    CLASSIC_UDP_SIZE,
    NameRecord,
    NameServer,
    Upstream,
    find_addresses,
)
from ketch.network.store import Network

logger = logging.getLogger(__name__)


async def answer(
    server: NameServer, network: Network, wire: bytes, client: IPv4Address | None, over_tcp: bool
) -> bytes | None:
    """Return the wire-format response to the query ``wire``, or None to send nothing."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException as error:
        logger.debug("malformed DNS query from %s on %s: %s", client, network.name, error)
        return _format_error(wire)
    if query.flags & dns.flags.QR:
        return None
    response = await _respond(server, network, query, client, over_tcp)
    max_size = 65535 if over_tcp else max(CLASSIC_UDP_SIZE, query.payload)
    return _to_wire(query, response, max_size)


async def _respond(
    server: NameServer,
    network: Network,
    query: dns.message.Message,
    client: IPv4Address | None,
    over_tcp: bool,
) -> dns.message.Message:
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        return _error_response(query, dns.rcode.NOTIMP)
    question = query.question[0]
    if question.rdclass == dns.rdataclass.IN:
        local = _answer_locally(server, network, query, client)
        if local is not None:
            return local
    return await _forward(server, network, query, client, over_tcp)


def _answer_locally(
    server: NameServer, network: Network, query: dns.message.Message, client: IPv4Address | None
) -> dns.message.Message | None:
    question = query.question[0]
    records = server.lookup(network, client)
    name = question.name.to_text()
    if question.rdtype == dns.rdatatype.PTR:
        pointer = find_pointer(records, name)
        if pointer is None:
            return None
        response = _local_response(query)
        response.answer.append(dns.rrset.from_text(question.name, ANSWER_TTL, "IN", "PTR", pointer))
        return response
    addresses = find_addresses(records, name)
    if not addresses:
        return None
    response = _local_response(query)
    if question.rdtype == dns.rdatatype.A:
        texts = [str(address) for address in addresses]
        response.answer.append(
            dns.rrset.from_text_list(question.name, ANSWER_TTL, "IN", "A", texts)
        )
    return response


async def _forward(
    server: NameServer,
    network: Network,
    query: dns.message.Message,
    client: IPv4Address | None,
    over_tcp: bool,
) -> dns.message.Message:
    upstreams = server.client_upstreams(network, client) if server.client_upstreams else []
    upstreams = upstreams or server.upstreams
    # An internal network has no route out, so its containers resolve container names only.
    if network.internal or not upstreams:
        return _error_response(query, dns.rcode.SERVFAIL)
    for upstream in upstreams:
        try:
            return await _ask_upstream(query, upstream, server.timeout, over_tcp)
        except (dns.exception.DNSException, OSError, EOFError) as error:
            server.failures.record(upstream, error)
    return _error_response(query, dns.rcode.SERVFAIL)


async def _ask_upstream(
    query: dns.message.Message, upstream: Upstream, timeout: float, over_tcp: bool
) -> dns.message.Message:
    address, port = upstream
    if not over_tcp:
        response = await dns.asyncquery.udp(query, address, timeout, port)
        if not response.flags & dns.flags.TC:
            return response
    return await dns.asyncquery.tcp(query, address, timeout, port)


def find_pointer(records: Sequence[NameRecord], query_name: str) -> str | None:
    """Return ``NAME.NETWORK.`` for an ``in-addr.arpa`` name of a record's address."""
    try:
        address = ip_address(dns.reversename.to_address(dns.name.from_text(query_name)))
    except (dns.exception.DNSException, ValueError):
        return None
    for record in records:
        if record.address == address and record.names:
            return f"{record.names[0]}.{record.network_name}."
    return None


def _local_response(query: dns.message.Message) -> dns.message.Message:
    """Start an authoritative answer to ``query`` that also offers recursion."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.RA
    return response


def _error_response(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    response.set_rcode(rcode)
    return response


def _format_error(wire: bytes) -> bytes | None:
    """Return a FORMERR header for a query that does not parse, or None when it has no
    header to answer."""
    if len(wire) < 12:
        return None
    (query_id, flags) = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    response_flags = dns.flags.QR | dns.flags.RA | (flags & dns.flags.RD) | dns.rcode.FORMERR
    return struct.pack("!HHHHHH", query_id, response_flags, 0, 0, 0, 0)


def _to_wire(
    query: dns.message.Message, response: dns.message.Message, max_size: int
) -> bytes | None:
    """Render ``response`` within ``max_size`` bytes. dnspython drops the records that do not
    fit and sets the TC flag, so that the client asks again over TCP."""
    response.id = query.id
    try:
        return response.to_wire(max_size=max_size, prefer_truncation=True)
    except dns.exception.TooBig:
        # Even the question does not fit, which only a hostile query can cause.
        logger.debug(
            "dropped a response to query %d: its question exceeds %d bytes", query.id, max_size
        )
        return None
