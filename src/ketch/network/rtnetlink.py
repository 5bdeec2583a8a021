"""The rtnetlink requests that ketch's links need, over a raw NETLINK_ROUTE socket.

Importing pyroute2 grew ketchd's RSS by about 11 MiB, and ketch needs only a dozen
requests of the kernel's stable rtnetlink protocol (rtnetlink(7), netlink(7)), so this
module encodes and decodes them itself. Every message starts with a 16-byte nlmsghdr:

    change    RTM_NEWLINK, RTM_SETLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE with
              NLM_F_REQUEST | NLM_F_ACK (plus NLM_F_CREATE | NLM_F_EXCL for a new object).
              The kernel replies with an NLMSG_ERROR whose errno is 0 on success.
    lookup    RTM_GETLINK with IFLA_IFNAME and NLM_F_ACK: one RTM_NEWLINK, then the ack
    dump      RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE with NLM_F_DUMP: one message per
              object, spread over as many reads as the kernel needs, then NLMSG_DONE

A message body is a fixed struct (ifinfomsg, ifaddrmsg, rtmsg), then attributes: a 4-byte
header (length, type), the value, and padding to 4 bytes. A nested attribute contains
further attributes as its value.

Every request runs in the network namespace of the thread that opens the ``RouteSocket``,
because a netlink socket belongs to the namespace it was made in.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

# Message types (linux/rtnetlink.h, linux/netlink.h).
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26

# Message flags.
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300

# Link attributes (linux/if_link.h) and the nested ones of IFLA_LINKINFO and of a veth.
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFF_UP = 0x1

# Address attributes (linux/if_addr.h).
IFA_ADDRESS = 1
IFA_LOCAL = 2

# Route attributes and rtmsg values (linux/rtnetlink.h).
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
RT_TABLE_MAIN = 254
# A route that a program added, as opposed to the kernel (RTPROT_KERNEL) or boot-time setup.
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

# The flag bits of an attribute type: NLA_F_NESTED marks a nested attribute.
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id
IFINFOMSG = struct.Struct("=BxHiII")  # family, padding, type, index, flags, change mask
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTMSG = struct.Struct("=BBBBBBBBI")
ATTRIBUTE_HEADER = struct.Struct("=HH")  # length, type
ERRNO = struct.Struct("=i")
U32 = struct.Struct("=I")


@dataclass(frozen=True)
class Link:
    """A link of the socket's network namespace: its index and the name it had when read."""

    index: int
    name: str


@dataclass(frozen=True)
class Route:
    """An IPv4 route: its destination (None for a default route) and output link index."""

    destination: IPv4Address | None
    dst_len: int
    oif: int | None


class RouteSocket:
    """A NETLINK_ROUTE socket in the calling thread's network namespace.

    Each method sends one request and waits for the kernel's reply. A request that the
    kernel rejects raises ``OSError(errno, "<operation>: <strerror>")``.
    """

    def __init__(self) -> None:
        self._socket = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            # Port id 0 lets the kernel pick a free one.
            self._socket.bind((0, 0))
        except BaseException:
            self._socket.close()
            raise
        self._sequence = 0

    def __enter__(self) -> RouteSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close()

    def link(self, name: str) -> Link | None:
        """Return link ``name``, or None if the namespace has no link of that name."""
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + encode_attribute(
            IFLA_IFNAME, encode_string(name)
        )
        try:
            replies = self._request(RTM_GETLINK, NLM_F_ACK, body, f"look up link {name}")
        except OSError as error:
            if error.errno == errno.ENODEV:
                return None
            raise
        for message_type, payload in replies:
            if message_type == RTM_NEWLINK:
                return decode_link(payload)
        return None

    def links(self) -> list[tuple[Link, dict[int, bytes]]]:
        """Return every link of the namespace with its attributes by type."""
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        replies = self._request(RTM_GETLINK, NLM_F_DUMP, body, "list links")
        links = []
        for message_type, payload in replies:
            if message_type == RTM_NEWLINK:
                link = decode_link(payload)
                if link is not None:
                    links.append((link, decode_attributes(payload, IFINFOMSG.size)))
        return links

    def add_bridge(self, name: str) -> None:
        """Create bridge ``name``. Raise OSError with EEXIST if a link has that name."""
        linkinfo = encode_nested(IFLA_LINKINFO, [encode_attribute(IFLA_INFO_KIND, b"bridge\0")])
        self._create_link(name, linkinfo, f"add bridge {name}")

    def add_veth(self, name: str, peer_name: str) -> None:
        """Create the veth pair ``name`` and ``peer_name``."""
        peer = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + encode_attribute(
            IFLA_IFNAME, encode_string(peer_name)
        )
        linkinfo = encode_nested(
            IFLA_LINKINFO,
            [
                encode_attribute(IFLA_INFO_KIND, b"veth\0"),
                encode_nested(IFLA_INFO_DATA, [encode_nested(VETH_INFO_PEER, [peer])]),
            ],
        )
        self._create_link(name, linkinfo, f"add veth {name} with peer {peer_name}")

    def set_link(
        self,
        link: Link,
        *,
        name: str | None = None,
        mtu: int | None = None,
        master: int | None = None,
        alias: str | None = None,
        mac: str | None = None,
        namespace_fd: int | None = None,
        up: bool = False,
    ) -> None:
        """Change the given settings of ``link`` in one request. ``master`` is the index of
        a bridge, ``namespace_fd`` an open file of the network namespace to move it to."""
        attributes = []
        if name is not None:
            attributes.append(encode_attribute(IFLA_IFNAME, encode_string(name)))
        if mtu is not None:
            attributes.append(encode_attribute(IFLA_MTU, U32.pack(mtu)))
        if master is not None:
            attributes.append(encode_attribute(IFLA_MASTER, U32.pack(master)))
        if alias is not None:
            attributes.append(encode_attribute(IFLA_IFALIAS, encode_string(alias)))
        if mac is not None:
            attributes.append(encode_attribute(IFLA_ADDRESS, encode_mac(mac)))
        if namespace_fd is not None:
            attributes.append(encode_attribute(IFLA_NET_NS_FD, U32.pack(namespace_fd)))

        # The kernel changes only the flags in the change mask, so the others stay as they are.
        flags = IFF_UP if up else 0
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, link.index, flags, flags)
        self._request(RTM_SETLINK, NLM_F_ACK, body + b"".join(attributes), f"set link {link.name}")

    def delete_link(self, link: Link) -> None:
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, link.index, 0, 0)
        self._request(RTM_DELLINK, NLM_F_ACK, body, f"delete link {link.name}")

    def ipv4_addresses(self, link: Link) -> list[IPv4Interface]:
        """Return the IPv4 addresses of ``link`` with their prefix lengths."""
        body = IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
        replies = self._request(RTM_GETADDR, NLM_F_DUMP, body, f"list addresses of {link.name}")
        addresses = []
        for message_type, payload in replies:
            if message_type != RTM_NEWADDR or len(payload) < IFADDRMSG.size:
                continue
            family, prefix_len, _, _, index = IFADDRMSG.unpack_from(payload)
            if family != socket.AF_INET or index != link.index:
                continue
            attributes = decode_attributes(payload, IFADDRMSG.size)
            # IFA_LOCAL is the link's own address. IFA_ADDRESS differs from it only on a
            # point-to-point link, where it is the peer's.
            value = attributes.get(IFA_LOCAL, attributes.get(IFA_ADDRESS))
            if value is not None and len(value) == 4:
                addresses.append(IPv4Interface((IPv4Address(value), prefix_len)))
        return addresses

    def add_ipv4_address(self, link: Link, address: IPv4Interface) -> None:
        """Add ``address`` (with its prefix length) to ``link``. Raise OSError with EEXIST if
        the link has that address already."""
        body = IFADDRMSG.pack(socket.AF_INET, address.network.prefixlen, 0, 0, link.index)
        packed = address.ip.packed
        attributes = encode_attribute(IFA_LOCAL, packed) + encode_attribute(IFA_ADDRESS, packed)
        operation = f"add address {address} to {link.name}"
        self._request(
            RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body + attributes, operation
        )

    def ipv4_routes(self, table: int = RT_TABLE_MAIN) -> list[Route]:
        """Return the IPv4 routes of routing table ``table``."""
        body = RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        replies = self._request(RTM_GETROUTE, NLM_F_DUMP, body, "list routes")
        routes = []
        for message_type, payload in replies:
            if message_type == RTM_NEWROUTE and len(payload) >= RTMSG.size:
                route = decode_route(payload, table)
                if route is not None:
                    routes.append(route)
        return routes

    def add_default_route(self, gateway: IPv4Address) -> None:
        """Add an IPv4 default route through ``gateway`` to the main table."""
        body = RTMSG.pack(
            socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
        )
        attributes = encode_attribute(RTA_GATEWAY, gateway.packed)
        operation = f"add default route via {gateway}"
        self._request(
            RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body + attributes, operation
        )

    def _create_link(self, name: str, linkinfo: bytes, operation: str) -> None:
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        body += encode_attribute(IFLA_IFNAME, encode_string(name)) + linkinfo
        self._request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body, operation)

    def _request(
        self, message_type: int, flags: int, body: bytes, operation: str
    ) -> list[tuple[int, bytes]]:
        """Send one request and return the ``(type, payload)`` of the kernel's replies
        before the ack or NLMSG_DONE. Raise OSError for an error that the kernel returns."""
        self._sequence += 1
        sequence = self._sequence
        self._socket.sendall(encode_message(message_type, NLM_F_REQUEST | flags, sequence, body))

        replies: list[tuple[int, bytes]] = []
        while True:
            for reply_type, reply_sequence, payload in decode_messages(_receive(self._socket)):
                # A reply to an earlier request that raised before reading all of it.
                if reply_sequence != sequence:
                    continue
                if reply_type in (NLMSG_ERROR, NLMSG_DONE):
                    check_errno(payload, operation)
                    return replies
                replies.append((reply_type, payload))


def link_aliases() -> dict[str, str]:
    """Return ``name -> ifalias`` for the links of the calling thread's network namespace
    that have an alias. Raise OSError if the kernel rejects the request."""
    with RouteSocket() as route_socket:
        links = route_socket.links()
    aliases = {}
    for link, attributes in links:
        alias = decode_string(attributes.get(IFLA_IFALIAS, b""))
        if alias:
            aliases[link.name] = alias
    return aliases


def encode_message(message_type: int, flags: int, sequence: int, body: bytes) -> bytes:
    length = NLMSG_HEADER.size + len(body)
    return NLMSG_HEADER.pack(length, message_type, flags, sequence, 0) + body


def encode_attribute(attribute_type: int, value: bytes) -> bytes:
    """Return an attribute with its header, padded to 4 bytes. The length in the header
    leaves out the padding."""
    length = ATTRIBUTE_HEADER.size + len(value)
    return (
        ATTRIBUTE_HEADER.pack(length, attribute_type) + value + b"\0" * (aligned(length) - length)
    )


def encode_nested(attribute_type: int, attributes: Iterable[bytes]) -> bytes:
    return encode_attribute(attribute_type | NLA_F_NESTED, b"".join(attributes))


def encode_string(text: str) -> bytes:
    return text.encode() + b"\0"


def encode_mac(mac: str) -> bytes:
    """Return the 6 bytes of a MAC address written as ``02:42:ac:11:00:02``."""
    octets = mac.split(":")
    if len(octets) != 6:
        raise ValueError(f"invalid MAC address {mac!r}: expected 6 octets separated by ':'")
    return bytes(int(octet, 16) for octet in octets)


def check_errno(payload: bytes, operation: str) -> None:
    """Raise OSError for the negative errno at the start of an NLMSG_ERROR or NLMSG_DONE
    payload. An errno of 0 is an ack."""
    if len(payload) < ERRNO.size:
        # An NLMSG_DONE without an errno ends a dump that succeeded.
        return
    (negative_errno,) = ERRNO.unpack_from(payload)
    if negative_errno < 0:
        code = -negative_errno
        raise OSError(code, f"{operation}: {os.strerror(code)}")


def decode_messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(type, sequence number, payload)`` for each netlink message in one read."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, message_type, _, sequence, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            raise OSError(f"malformed netlink message of {length} bytes")
        yield message_type, sequence, data[offset + NLMSG_HEADER.size : offset + length]
        offset += aligned(length)


def decode_attributes(payload: bytes, offset: int) -> dict[int, bytes]:
    """Return the values of the attributes that start at ``offset`` of a payload, by type
    without the flag bits. A nested attribute's value is its encoded content."""
    attributes: dict[int, bytes] = {}
    while offset + ATTRIBUTE_HEADER.size <= len(payload):
        length, attribute_type = ATTRIBUTE_HEADER.unpack_from(payload, offset)
        if length < ATTRIBUTE_HEADER.size:
            break
        value = payload[offset + ATTRIBUTE_HEADER.size : offset + length]
        attributes[attribute_type & NLA_TYPE_MASK] = value
        offset += aligned(length)
    return attributes


def decode_string(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def decode_link(payload: bytes) -> Link | None:
    """Return the link of an RTM_NEWLINK payload, or None if it has no name."""
    if len(payload) < IFINFOMSG.size:
        return None
    _, _, index, _, _ = IFINFOMSG.unpack_from(payload)
    name = decode_attributes(payload, IFINFOMSG.size).get(IFLA_IFNAME)
    if name is None:
        return None
    return Link(index, decode_string(name))


def decode_route(payload: bytes, table: int) -> Route | None:
    """Return the IPv4 route of an RTM_NEWROUTE payload, or None if it is in another table."""
    family, dst_len, _, _, header_table, _, _, _, _ = RTMSG.unpack_from(payload)
    attributes = decode_attributes(payload, RTMSG.size)
    # rtm_table is only 8 bits wide, so a table above 255 is in RTA_TABLE alone.
    route_table = header_table
    if RTA_TABLE in attributes:
        (route_table,) = U32.unpack_from(attributes[RTA_TABLE])
    if family != socket.AF_INET or route_table != table:
        return None

    destination = attributes.get(RTA_DST)
    oif = attributes.get(RTA_OIF)
    return Route(
        destination=IPv4Address(destination) if destination is not None else None,
        dst_len=dst_len,
        oif=U32.unpack_from(oif)[0] if oif is not None else None,
    )


def _receive(sock: socket.socket) -> bytes:
    """Read one datagram whole. A peek with MSG_TRUNC returns its full length, because a
    link with many attributes (such as one with SR-IOV functions) can need a large read."""
    length = sock.recv_into(bytearray(1), 1, socket.MSG_PEEK | socket.MSG_TRUNC)
    return sock.recv(max(length, 1))


def aligned(length: int) -> int:
    """Round up to the 4-byte alignment of netlink messages and attributes."""
    return (length + 3) & ~3
