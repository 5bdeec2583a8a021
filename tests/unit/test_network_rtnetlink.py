"""The link table read without pyroute2: parsing of netlink messages, and agreement with
pyroute2 on the test's own network namespace."""

from __future__ import annotations

import struct

import pytest

from ketch.network import rtnetlink


def attribute(attribute_type: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, attribute_type) + value + b"\0" * (-length % 4)


def link_message(*attributes: bytes) -> bytes:
    body = rtnetlink.IFINFOMSG.pack(0, 1, 7, 0, 0) + b"".join(attributes)
    header = rtnetlink.NLMSG_HEADER.pack(16 + len(body), rtnetlink.RTM_NEWLINK, 2, 1, 0)
    return header + body


def test_messages_split_and_attributes_read() -> None:
    first = link_message(
        attribute(rtnetlink.IFLA_IFNAME, b"br0\0"),
        attribute(4, b"\x00\x05\x00\x00"),
        attribute(rtnetlink.IFLA_IFALIAS, b"ketch-bridge: t n\0"),
    )
    second = link_message(attribute(rtnetlink.IFLA_IFNAME | 0x8000, b"eth10\0"))
    done = rtnetlink.NLMSG_HEADER.pack(20, rtnetlink.NLMSG_DONE, 2, 1, 0) + b"\0" * 4

    messages = list(rtnetlink._messages(first + second + done))

    assert [message_type for message_type, _ in messages] == [16, 16, 3]
    assert rtnetlink._attributes(messages[0][1], rtnetlink.IFINFOMSG.size) == {
        rtnetlink.IFLA_IFNAME: "br0",
        rtnetlink.IFLA_IFALIAS: "ketch-bridge: t n",
    }
    assert rtnetlink._attributes(messages[1][1], rtnetlink.IFINFOMSG.size) == {
        rtnetlink.IFLA_IFNAME: "eth10"
    }


def test_messages_reject_short_length() -> None:
    broken = rtnetlink.NLMSG_HEADER.pack(8, rtnetlink.RTM_NEWLINK, 0, 1, 0)
    with pytest.raises(OSError, match="malformed netlink message of 8 bytes"):
        list(rtnetlink._messages(broken))


def test_link_aliases_match_pyroute2() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        expected = {
            link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_IFALIAS")
            for link in ipr.get_links()
            if link.get_attr("IFLA_IFALIAS")
        }
    assert rtnetlink.link_aliases() == expected
