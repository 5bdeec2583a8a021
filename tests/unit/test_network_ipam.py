"""Subnet and address choice of the bridge driver's IPAM."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from ketch.errors import Forbidden, InvalidArgument, Unavailable
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


def test_check_free_names_other_network() -> None:
    with pytest.raises(Forbidden, match="overlaps subnet 10.1.0.0/24 of network backend"):
        ipam.check_free(IPv4Network("10.1.0.0/16"), [("backend", IPv4Network("10.1.0.0/24"))], [])


def test_check_free_names_host_route() -> None:
    with pytest.raises(Forbidden, match="overlaps the host's route to 10.1.2.0/24"):
        ipam.check_free(IPv4Network("10.1.0.0/16"), [], [IPv4Network("10.1.2.0/24")])


def test_check_free_accepts_disjoint() -> None:
    ipam.check_free(
        IPv4Network("10.2.0.0/16"),
        [("backend", IPv4Network("10.1.0.0/16"))],
        [IPv4Network("10.3.0.0/16")],
    )


def test_address_inside_ip_range() -> None:
    subnet = IPv4Network("10.1.0.0/24")
    chosen = ipam.allocate_address(subnet, [], ip_range=IPv4Network("10.1.0.128/25"))
    assert chosen == IPv4Address("10.1.0.128")


def test_address_skips_custom_gateway() -> None:
    subnet = IPv4Network("10.1.0.0/24")
    chosen = ipam.allocate_address(subnet, [], gateway=IPv4Address("10.1.0.1"))
    assert chosen == IPv4Address("10.1.0.2")
    chosen = ipam.allocate_address(subnet, [], gateway=IPv4Address("10.1.0.254"))
    assert chosen == IPv4Address("10.1.0.1")


def test_address_range_full_raises() -> None:
    subnet = IPv4Network("10.1.0.0/24")
    with pytest.raises(Unavailable, match="ip-range 10.1.0.4/31"):
        ipam.allocate_address(
            subnet, [IPv4Address("10.1.0.4"), IPv4Address("10.1.0.5")], IPv4Network("10.1.0.4/31")
        )


def test_parse_subnet_rejects_ipv6() -> None:
    with pytest.raises(InvalidArgument, match="only IPv4"):
        ipam.parse_subnet("fd00::/64", "subnet")


def test_parse_subnet_rejects_garbage() -> None:
    with pytest.raises(InvalidArgument, match="invalid subnet 'x'"):
        ipam.parse_subnet("x", "subnet")


def test_check_in_subnet_rejects_broadcast() -> None:
    with pytest.raises(InvalidArgument, match="not a host address of subnet 10.1.0.0/24"):
        ipam.check_in_subnet(IPv4Address("10.1.0.255"), IPv4Network("10.1.0.0/24"), "gateway")
