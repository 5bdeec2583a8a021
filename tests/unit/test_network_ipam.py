"""Subnet and address choice of the bridge driver's IPAM."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from ketch.errors import Unavailable
from ketch.network import ipam


def test_subnet_skips_overlapping_route() -> None:
    chosen = ipam.choose_subnet([IPv4Network("172.17.5.0/24")])
    assert chosen == IPv4Network("172.18.0.0/16")


def test_subnet_first_pool_when_free() -> None:
    assert ipam.choose_subnet([IPv4Network("10.0.0.0/8")]) == IPv4Network("172.17.0.0/16")


def test_subnet_all_taken_raises() -> None:
    with pytest.raises(Unavailable):
        ipam.choose_subnet([IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16")])


def test_address_skips_gateway_and_used() -> None:
    subnet = IPv4Network("172.17.0.0/16")
    chosen = ipam.allocate_address(subnet, [IPv4Address("172.17.0.2")])
    assert chosen == IPv4Address("172.17.0.3")


def test_address_full_subnet_raises() -> None:
    subnet = IPv4Network("10.1.0.0/30")
    with pytest.raises(Unavailable):
        ipam.allocate_address(subnet, [IPv4Address("10.1.0.2")])


def test_mac_from_address() -> None:
    assert ipam.mac_address(IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"


def test_parse_network_ignores_default_route() -> None:
    assert ipam.parse_network("0.0.0.0/0") is None
