"""The rtnetlink client: encoding of requests, decoding of replies and errors, and agreement
with pyroute2 on what the test's own network namespace contains."""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface

import pytest

from ketch.network import rtnetlink
from ketch.network.rtnetlink import Link, Route, RouteSocket


def attribute(attribute_type: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, attribute_type) + value + b"\0" * (-length % 4)


def message(message_type: int, body: bytes, sequence: int = 1) -> bytes:
    return rtnetlink.NLMSG_HEADER.pack(16 + len(body), message_type, 2, sequence, 0) + body


def link_message(*attributes: bytes, index: int = 7) -> bytes:
    body = rtnetlink.IFINFOMSG.pack(0, 1, index, 0, 0) + b"".join(attributes)
    return message(rtnetlink.RTM_NEWLINK, body)


def error_message(negative_errno: int, sequence: int = 1) -> bytes:
    # An NLMSG_ERROR carries the errno, then the header of the request it replies to.
    request_header = rtnetlink.NLMSG_HEADER.pack(16, 0, 0, sequence, 0)
    return message(
        rtnetlink.NLMSG_ERROR, struct.pack("=i", negative_errno) + request_header, sequence
    )


def done_message(sequence: int = 1) -> bytes:
    return message(rtnetlink.NLMSG_DONE, struct.pack("=i", 0), sequence)


class FakeNetlinkSocket:
    """Records the requests sent and returns one prepared datagram per read."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.datagrams = datagrams
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def recv_into(self, buffer: bytearray, size: int, flags: int) -> int:
        return len(self.datagrams[0])

    def recv(self, size: int) -> bytes:
        return self.datagrams.pop(0)

    def close(self) -> None:
        pass


def fake_route_socket(*datagrams: bytes) -> tuple[RouteSocket, FakeNetlinkSocket]:
    route_socket = RouteSocket()
    route_socket.close()
    fake = FakeNetlinkSocket(list(datagrams))
    route_socket._socket = fake  # type: ignore[assignment]
    return route_socket, fake


def split_request(data: bytes) -> tuple[tuple[int, int, int, int, int], bytes]:
    header = rtnetlink.NLMSG_HEADER.unpack_from(data)
    assert header[0] == len(data)
    return header, data[rtnetlink.NLMSG_HEADER.size :]


def test_messages_split_and_attributes_read() -> None:
    first = link_message(
        attribute(rtnetlink.IFLA_IFNAME, b"br0\0"),
        attribute(4, b"\x00\x05\x00\x00"),
        attribute(rtnetlink.IFLA_IFALIAS, b"ketch-bridge: t n\0"),
    )
    second = link_message(attribute(rtnetlink.IFLA_IFNAME | rtnetlink.NLA_F_NESTED, b"eth10\0"))

    messages = list(rtnetlink.decode_messages(first + second + done_message()))

    assert [message_type for message_type, _, _ in messages] == [16, 16, 3]
    first_attributes = rtnetlink.decode_attributes(messages[0][2], rtnetlink.IFINFOMSG.size)
    assert first_attributes == {
        rtnetlink.IFLA_IFNAME: b"br0\0",
        4: b"\x00\x05\x00\x00",
        rtnetlink.IFLA_IFALIAS: b"ketch-bridge: t n\0",
    }
    assert rtnetlink.decode_link(messages[1][2]) == Link(7, "eth10")


def test_messages_reject_short_length() -> None:
    broken = rtnetlink.NLMSG_HEADER.pack(8, rtnetlink.RTM_NEWLINK, 0, 1, 0)
    with pytest.raises(OSError, match="malformed netlink message of 8 bytes"):
        list(rtnetlink.decode_messages(broken))


def test_attribute_padded_to_four_bytes() -> None:
    encoded = rtnetlink.encode_attribute(rtnetlink.IFLA_IFNAME, b"eth0\0")

    assert encoded == struct.pack("=HH", 9, rtnetlink.IFLA_IFNAME) + b"eth0\0" + b"\0\0\0"


def test_add_bridge_encodes_linkinfo_kind() -> None:
    route_socket, fake = fake_route_socket(error_message(0))

    route_socket.add_bridge("br0")

    (length, message_type, flags, sequence, port), body = split_request(fake.sent[0])
    assert message_type == rtnetlink.RTM_NEWLINK
    expected_flags = (
        rtnetlink.NLM_F_REQUEST
        | rtnetlink.NLM_F_ACK
        | rtnetlink.NLM_F_CREATE
        | rtnetlink.NLM_F_EXCL
    )
    assert flags == expected_flags
    assert sequence == 1
    assert body[: rtnetlink.IFINFOMSG.size] == rtnetlink.IFINFOMSG.pack(0, 0, 0, 0, 0)
    attributes = rtnetlink.decode_attributes(body, rtnetlink.IFINFOMSG.size)
    assert attributes[rtnetlink.IFLA_IFNAME] == b"br0\0"
    linkinfo = rtnetlink.decode_attributes(attributes[rtnetlink.IFLA_LINKINFO], 0)
    assert linkinfo == {rtnetlink.IFLA_INFO_KIND: b"bridge\0"}


def test_linkinfo_marked_nested() -> None:
    route_socket, fake = fake_route_socket(error_message(0))

    route_socket.add_bridge("br0")

    _, body = split_request(fake.sent[0])
    name_length = 4 + len(b"br0\0")
    linkinfo_offset = rtnetlink.IFINFOMSG.size + rtnetlink.aligned(name_length)
    _, raw_type = rtnetlink.ATTRIBUTE_HEADER.unpack_from(body, linkinfo_offset)
    assert raw_type == rtnetlink.IFLA_LINKINFO | rtnetlink.NLA_F_NESTED


def test_add_veth_encodes_peer_name() -> None:
    route_socket, fake = fake_route_socket(error_message(0))

    route_socket.add_veth("vethhost", "vethpeer")

    _, body = split_request(fake.sent[0])
    attributes = rtnetlink.decode_attributes(body, rtnetlink.IFINFOMSG.size)
    assert attributes[rtnetlink.IFLA_IFNAME] == b"vethhost\0"
    linkinfo = rtnetlink.decode_attributes(attributes[rtnetlink.IFLA_LINKINFO], 0)
    assert linkinfo[rtnetlink.IFLA_INFO_KIND] == b"veth\0"
    info_data = rtnetlink.decode_attributes(linkinfo[rtnetlink.IFLA_INFO_DATA], 0)
    # The peer's value is an ifinfomsg of its own, then the peer's attributes.
    peer = info_data[rtnetlink.VETH_INFO_PEER]
    assert peer[: rtnetlink.IFINFOMSG.size] == rtnetlink.IFINFOMSG.pack(0, 0, 0, 0, 0)
    peer_attributes = rtnetlink.decode_attributes(peer, rtnetlink.IFINFOMSG.size)
    assert peer_attributes == {rtnetlink.IFLA_IFNAME: b"vethpeer\0"}


def test_set_link_encodes_changes() -> None:
    route_socket, fake = fake_route_socket(error_message(0))

    route_socket.set_link(
        Link(5, "veth0"),
        name="eth0",
        mtu=1400,
        master=3,
        alias="ketch-veth: x",
        mac="02:42:ac:11:00:02",
        namespace_fd=9,
        up=True,
    )

    (_, message_type, flags, _, _), body = split_request(fake.sent[0])
    assert message_type == rtnetlink.RTM_SETLINK
    assert flags == rtnetlink.NLM_F_REQUEST | rtnetlink.NLM_F_ACK
    _, _, index, link_flags, change = rtnetlink.IFINFOMSG.unpack_from(body)
    assert index == 5
    assert link_flags == rtnetlink.IFF_UP
    assert change == rtnetlink.IFF_UP
    attributes = rtnetlink.decode_attributes(body, rtnetlink.IFINFOMSG.size)
    assert attributes == {
        rtnetlink.IFLA_IFNAME: b"eth0\0",
        rtnetlink.IFLA_MTU: struct.pack("=I", 1400),
        rtnetlink.IFLA_MASTER: struct.pack("=I", 3),
        rtnetlink.IFLA_IFALIAS: b"ketch-veth: x\0",
        rtnetlink.IFLA_ADDRESS: bytes.fromhex("0242ac110002"),
        rtnetlink.IFLA_NET_NS_FD: struct.pack("=I", 9),
    }


def test_set_link_mtu_only_keeps_flags() -> None:
    route_socket, fake = fake_route_socket(error_message(0))

    route_socket.set_link(Link(5, "veth0"), mtu=1500)

    _, body = split_request(fake.sent[0])
    _, _, _, link_flags, change = rtnetlink.IFINFOMSG.unpack_from(body)
    assert link_flags == 0
    assert change == 0


def test_invalid_mac_rejected() -> None:
    with pytest.raises(ValueError, match="invalid MAC address '02:42'"):
        rtnetlink.encode_mac("02:42")


def test_add_address_encodes_local_and_prefix() -> None:
    route_socket, fake = fake_route_socket(error_message(0))

    route_socket.add_ipv4_address(Link(4, "br0"), IPv4Interface("10.1.2.1/24"))

    (_, message_type, flags, _, _), body = split_request(fake.sent[0])
    assert message_type == rtnetlink.RTM_NEWADDR
    assert flags & rtnetlink.NLM_F_EXCL
    assert rtnetlink.IFADDRMSG.unpack_from(body) == (socket.AF_INET, 24, 0, 0, 4)
    attributes = rtnetlink.decode_attributes(body, rtnetlink.IFADDRMSG.size)
    assert attributes[rtnetlink.IFA_LOCAL] == bytes([10, 1, 2, 1])
    assert attributes[rtnetlink.IFA_ADDRESS] == bytes([10, 1, 2, 1])


def test_add_default_route_encodes_gateway() -> None:
    route_socket, fake = fake_route_socket(error_message(0))

    route_socket.add_default_route(IPv4Address("10.1.2.1"))

    (_, message_type, _, _, _), body = split_request(fake.sent[0])
    assert message_type == rtnetlink.RTM_NEWROUTE
    family, dst_len, _, _, table, _, _, route_type, _ = rtnetlink.RTMSG.unpack_from(body)
    assert (family, dst_len, table) == (socket.AF_INET, 0, rtnetlink.RT_TABLE_MAIN)
    assert route_type == rtnetlink.RTN_UNICAST
    attributes = rtnetlink.decode_attributes(body, rtnetlink.RTMSG.size)
    assert attributes == {rtnetlink.RTA_GATEWAY: bytes([10, 1, 2, 1])}


def test_error_raises_oserror_with_operation() -> None:
    route_socket, _ = fake_route_socket(error_message(-errno.EEXIST))

    with pytest.raises(OSError) as raised:
        route_socket.add_bridge("br0")

    assert raised.value.errno == errno.EEXIST
    assert raised.value.strerror == f"add bridge br0: {os.strerror(errno.EEXIST)}"


def test_error_of_other_request_skipped() -> None:
    # A late reply to an earlier request carries that request's sequence number.
    route_socket, _ = fake_route_socket(error_message(-errno.EPERM, sequence=0) + error_message(0))

    route_socket.delete_link(Link(4, "br0"))


def test_dump_error_in_done_raises() -> None:
    failed_done = message(rtnetlink.NLMSG_DONE, struct.pack("=i", -errno.EINTR))
    route_socket, _ = fake_route_socket(failed_done)

    with pytest.raises(OSError) as raised:
        route_socket.links()

    assert raised.value.errno == errno.EINTR


def test_missing_link_returns_none() -> None:
    route_socket, _ = fake_route_socket(error_message(-errno.ENODEV))

    assert route_socket.link("absent0") is None


def test_link_lookup_reads_reply_before_ack() -> None:
    reply = link_message(attribute(rtnetlink.IFLA_IFNAME, b"br0\0"), index=12)
    route_socket, fake = fake_route_socket(reply, error_message(0))

    assert route_socket.link("br0") == Link(12, "br0")
    (_, message_type, flags, _, _), body = split_request(fake.sent[0])
    assert message_type == rtnetlink.RTM_GETLINK
    assert flags == rtnetlink.NLM_F_REQUEST | rtnetlink.NLM_F_ACK
    assert rtnetlink.decode_attributes(body, rtnetlink.IFINFOMSG.size) == {
        rtnetlink.IFLA_IFNAME: b"br0\0"
    }


def test_dump_spread_over_reads() -> None:
    first = link_message(attribute(rtnetlink.IFLA_IFNAME, b"lo\0"), index=1)
    second = link_message(
        attribute(rtnetlink.IFLA_IFNAME, b"br0\0"),
        attribute(rtnetlink.IFLA_IFALIAS, b"ketch-bridge: a\0"),
        index=2,
    )
    route_socket, _ = fake_route_socket(first, second + done_message())

    links = route_socket.links()

    assert [link for link, _ in links] == [Link(1, "lo"), Link(2, "br0")]
    assert links[1][1][rtnetlink.IFLA_IFALIAS] == b"ketch-bridge: a\0"


def route_message(table: int, dst_len: int, *attributes: bytes) -> bytes:
    body = rtnetlink.RTMSG.pack(socket.AF_INET, dst_len, 0, 0, table, 4, 0, 1, 0)
    return message(rtnetlink.RTM_NEWROUTE, body + b"".join(attributes))


def test_routes_filtered_by_table() -> None:
    main = route_message(
        rtnetlink.RT_TABLE_MAIN,
        16,
        attribute(rtnetlink.RTA_TABLE, struct.pack("=I", rtnetlink.RT_TABLE_MAIN)),
        attribute(rtnetlink.RTA_DST, bytes([172, 17, 0, 0])),
        attribute(rtnetlink.RTA_OIF, struct.pack("=I", 3)),
    )
    default = route_message(
        rtnetlink.RT_TABLE_MAIN, 0, attribute(rtnetlink.RTA_GATEWAY, b"\n\0\0\1")
    )
    local = route_message(255, 32, attribute(rtnetlink.RTA_DST, bytes([127, 0, 0, 1])))
    # rtm_table is 252 (RT_TABLE_COMPAT) for a table above 255.
    high_table = route_message(
        252, 8, attribute(rtnetlink.RTA_TABLE, struct.pack("=I", 1000)), attribute(1, b"\n\0\0\0")
    )
    route_socket, _ = fake_route_socket(main + default + local + high_table + done_message())

    routes = route_socket.ipv4_routes()

    assert routes == [
        Route(destination=IPv4Address("172.17.0.0"), dst_len=16, oif=3),
        Route(destination=None, dst_len=0, oif=None),
    ]


def test_addresses_filtered_by_link() -> None:
    def address_message(index: int, local: bytes) -> bytes:
        body = rtnetlink.IFADDRMSG.pack(socket.AF_INET, 24, 0, 0, index)
        return message(rtnetlink.RTM_NEWADDR, body + attribute(rtnetlink.IFA_LOCAL, local))

    datagram = address_message(2, bytes([10, 0, 0, 1])) + address_message(3, bytes([10, 0, 1, 1]))
    route_socket, _ = fake_route_socket(datagram + done_message())

    assert route_socket.ipv4_addresses(Link(3, "br1")) == [IPv4Interface("10.0.1.1/24")]


def test_link_aliases_match_pyroute2() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        expected = {
            link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_IFALIAS")
            for link in ipr.get_links()
            if link.get_attr("IFLA_IFALIAS")
        }
    assert rtnetlink.link_aliases() == expected


def test_main_routes_match_pyroute2() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        expected = [
            (route.get_attr("RTA_DST"), route["dst_len"], route.get_attr("RTA_OIF"))
            for route in ipr.get_routes(family=socket.AF_INET, table=rtnetlink.RT_TABLE_MAIN)
        ]
    with RouteSocket() as route_socket:
        routes = route_socket.ipv4_routes()

    actual = [
        (str(route.destination) if route.destination else None, route.dst_len, route.oif)
        for route in routes
    ]
    assert actual == expected


def test_link_lookup_matches_kernel_index() -> None:
    with RouteSocket() as route_socket:
        loopback = route_socket.link("lo")

    assert loopback == Link(socket.if_nametoindex("lo"), "lo")
