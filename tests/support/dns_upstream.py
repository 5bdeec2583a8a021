"""A small DNS server that tests run as the upstream of ketch's name server.

It serves A records from a table over UDP and TCP on one loopback port, on a thread of the
test process. A name in ``truncated_names`` gets an empty answer with the TC flag over UDP
and its records over TCP, as a real server does when an answer does not fit a datagram.
Every other name gets NXDOMAIN. ``queries`` lists what arrived as (name, "udp" | "tcp").
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rrset


@dataclass
class UpstreamServer:
    address: str
    port: int
    records: dict[str, list[str]]
    truncated_names: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)

    def respond(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text().lower()
        self.queries.append((name, transport))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif name in self.truncated_names and transport == "udp":
            response.flags |= dns.flags.TC
        else:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, "IN", "A", self.records[name])
            )
        return response.to_wire()


def bind_pair(address: str, port: int = 0) -> tuple[socket.socket, socket.socket]:
    """Bind a UDP and a TCP socket to the same ``address`` and ``port`` (0: any free one)."""
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((address, port))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((address, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            if port:
                raise
            continue
        tcp.listen(16)
        return udp, tcp
    raise RuntimeError(f"no port on {address} is free for both UDP and TCP")


def free_port(address: str = "127.0.0.1") -> int:
    """Return a port that is free for UDP and TCP on ``address`` at the time of the call."""
    udp, tcp = bind_pair(address)
    port = udp.getsockname()[1]
    udp.close()
    tcp.close()
    return port


def _serve(server: UpstreamServer, udp: socket.socket, tcp: socket.socket, stop: socket.socket):
    with selectors.DefaultSelector() as selector:
        for sock in (udp, tcp, stop):
            selector.register(sock, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is stop:
                    return
                if key.fileobj is udp:
                    wire, peer = udp.recvfrom(65535)
                    udp.sendto(server.respond(wire, "udp"), peer)
                else:
                    _answer_tcp_client(server, tcp)


def _answer_tcp_client(server: UpstreamServer, tcp: socket.socket) -> None:
    connection, _ = tcp.accept()
    with connection:
        connection.settimeout(5)
        stream = connection.makefile("rb")
        header = stream.read(2)
        if len(header) < 2:
            return
        (length,) = struct.unpack("!H", header)
        response = server.respond(stream.read(length), "tcp")
        connection.sendall(struct.pack("!H", len(response)) + response)


@contextmanager
def upstream_server(
    records: dict[str, list[str]],
    address: str = "127.0.0.1",
    port: int = 0,
    truncated_names: set[str] | None = None,
) -> Iterator[UpstreamServer]:
    """Serve ``records`` (fully qualified lower-case names with the final dot) until the
    block ends, also on failure. The sockets are made in the caller's network namespace."""
    udp, tcp = bind_pair(address, port)
    stop_reader, stop_writer = socket.socketpair()
    server = UpstreamServer(address, udp.getsockname()[1], records, truncated_names or set())
    thread = threading.Thread(target=_serve, args=(server, udp, tcp, stop_reader), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop_writer.send(b"x")
        thread.join(timeout=10)
        for sock in (udp, tcp, stop_reader, stop_writer):
            sock.close()
