"""A read of the link table over a raw rtnetlink socket, without pyroute2.

ketchd lists its own links at every start (to delete those a crash left behind). pyroute2
costs ketchd about 10 MiB of memory once imported, so this listing, which is all that a
start without bridge networks needs, reads the kernel's reply itself. Everything that
changes links stays with pyroute2 in ``ketch.network.links``.

The exchange (rtnetlink(7), netlink(7)); every message starts with a 16-byte nlmsghdr:

    request   RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, followed by an ifinfomsg of zeros
    reply     RTM_NEWLINK per link: an ifinfomsg, then attributes (IFLA_IFNAME,
              IFLA_IFALIAS, ...), spread over as many reads as the kernel needs
    end       NLMSG_DONE, or NLMSG_ERROR with a negative errno
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

RTM_NEWLINK = 16
RTM_GETLINK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFLA_IFNAME = 3
IFLA_IFALIAS = 20
# The flag bits of an attribute type (NLA_F_NESTED, NLA_F_NET_BYTEORDER).
NLA_TYPE_MASK = 0x3FFF

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id
IFINFOMSG = struct.Struct("=BxHiII")  # family, padding, type, index, flags, change mask
ATTRIBUTE_HEADER = struct.Struct("=HH")  # length, type


def link_aliases() -> dict[str, str]:
    """Return ``name -> ifalias`` for the links of the calling thread's network namespace
    that have an alias. Raise OSError if the kernel rejects the request."""
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    ) as sock:
        sock.bind((0, 0))
        sock.sendall(_dump_request(sequence=1))
        aliases: dict[str, str] = {}
        while True:
            for message_type, payload in _messages(_receive(sock)):
                if message_type == NLMSG_DONE:
                    return aliases
                if message_type == NLMSG_ERROR:
                    (negative_errno,) = struct.unpack_from("=i", payload)
                    raise OSError(-negative_errno, os.strerror(-negative_errno))
                if message_type == RTM_NEWLINK:
                    attributes = _attributes(payload, IFINFOMSG.size)
                    name = attributes.get(IFLA_IFNAME)
                    alias = attributes.get(IFLA_IFALIAS)
                    if name is not None and alias:
                        aliases[name] = alias


def _dump_request(sequence: int) -> bytes:
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    length = NLMSG_HEADER.size + len(body)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return NLMSG_HEADER.pack(length, RTM_GETLINK, flags, sequence, 0) + body


def _receive(sock: socket.socket) -> bytes:
    """Read one datagram whole. A peek with MSG_TRUNC returns its full length, because a
    link with many attributes (such as one with SR-IOV functions) can need a large read."""
    length = sock.recv_into(bytearray(1), 1, socket.MSG_PEEK | socket.MSG_TRUNC)
    return sock.recv(max(length, 1))


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield ``(type, payload)`` for each netlink message in one read."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, message_type, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            raise OSError(f"malformed netlink message of {length} bytes")
        yield message_type, data[offset + NLMSG_HEADER.size : offset + length]
        offset += _aligned(length)


def _attributes(payload: bytes, offset: int) -> dict[int, str]:
    """Return the IFLA_IFNAME and IFLA_IFALIAS values among the attributes that start at
    ``offset`` of a link message, by type."""
    attributes: dict[int, str] = {}
    while offset + ATTRIBUTE_HEADER.size <= len(payload):
        length, attribute_type = ATTRIBUTE_HEADER.unpack_from(payload, offset)
        if length < ATTRIBUTE_HEADER.size:
            break
        attribute_type &= NLA_TYPE_MASK
        if attribute_type in (IFLA_IFNAME, IFLA_IFALIAS):
            value = payload[offset + ATTRIBUTE_HEADER.size : offset + length]
            attributes[attribute_type] = value.split(b"\0", 1)[0].decode(errors="replace")
        offset += _aligned(length)
    return attributes


def _aligned(length: int) -> int:
    """Round up to the 4-byte alignment of netlink messages and attributes."""
    return (length + 3) & ~3
