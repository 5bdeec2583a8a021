"""Checks of network create bodies and endpoint settings, before anything touches the host."""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from ketch.engine.networking import (
    check_mac,
    check_predefined_endpoint,
    endpoint_request,
    network_name_of,
)
from ketch.engine.networks import _prune_until, parse_create_body
from ketch.errors import InvalidArgument, NotFound
from ketch.network.store import Network

USER_NETWORK = Network(
    id="u" * 64,
    name="back",
    driver="bridge",
    subnet=IPv4Network("10.5.0.0/24"),
    gateway=IPv4Address("10.5.0.1"),
    bridge="br-uuuuuuuuuuuu",
)
DEFAULT_NETWORK = Network(
    id="d" * 64,
    name="bridge",
    driver="bridge",
    subnet=IPv4Network("172.17.0.0/16"),
    gateway=IPv4Address("172.17.0.1"),
    bridge="ketch0",
)


def _body(**fields: object) -> dict[str, object]:
    return {"Name": "back", **fields}


def test_create_body_full() -> None:
    request = parse_create_body(
        _body(
            Driver="bridge",
            Internal=True,
            IPAM={
                "Driver": "default",
                "Config": [
                    {"Subnet": "10.5.0.0/24", "Gateway": "10.5.0.254", "IPRange": "10.5.0.64/26"}
                ],
            },
            Options={"com.docker.network.driver.mtu": "1400"},
            Labels={"team": "a"},
        )
    )
    assert request.subnet == IPv4Network("10.5.0.0/24")
    assert request.gateway == IPv4Address("10.5.0.254")
    assert request.ip_range == IPv4Network("10.5.0.64/26")
    assert request.internal
    assert request.mtu == 1400
    assert request.labels == {"team": "a"}


def test_create_body_defaults() -> None:
    request = parse_create_body(_body())
    assert request.subnet is None
    assert request.mtu == 1500


def test_create_body_missing_name() -> None:
    with pytest.raises(InvalidArgument, match="Name is required"):
        parse_create_body({})


def test_create_body_bad_name() -> None:
    with pytest.raises(InvalidArgument, match="invalid network name 'a b'"):
        parse_create_body({"Name": "a b"})


def test_create_body_unknown_driver() -> None:
    with pytest.raises(NotFound, match='plugin "overlay" not found'):
        parse_create_body(_body(Driver="overlay"))


def test_create_body_ipv6_rejected() -> None:
    with pytest.raises(InvalidArgument, match="EnableIPv6 is not supported"):
        parse_create_body(_body(EnableIPv6=True))


def test_create_body_gateway_without_subnet() -> None:
    with pytest.raises(InvalidArgument, match="needs a subnet"):
        parse_create_body(_body(IPAM={"Config": [{"Gateway": "10.5.0.1"}]}))


def test_create_body_gateway_outside_subnet() -> None:
    config = {"Subnet": "10.5.0.0/24", "Gateway": "10.6.0.1"}
    with pytest.raises(InvalidArgument, match="not a host address of subnet 10.5.0.0/24"):
        parse_create_body(_body(IPAM={"Config": [config]}))


def test_create_body_range_outside_subnet() -> None:
    config = {"Subnet": "10.5.0.0/24", "IPRange": "10.5.1.0/25"}
    with pytest.raises(InvalidArgument, match="not inside subnet 10.5.0.0/24"):
        parse_create_body(_body(IPAM={"Config": [config]}))


def test_create_body_two_subnets_rejected() -> None:
    configs = [{"Subnet": "10.5.0.0/24"}, {"Subnet": "10.6.0.0/24"}]
    with pytest.raises(InvalidArgument, match="one IPAM.Config entry"):
        parse_create_body(_body(IPAM={"Config": configs}))


def test_create_body_bad_mtu() -> None:
    with pytest.raises(InvalidArgument, match="from 68 to 65535"):
        parse_create_body(_body(Options={"com.docker.network.driver.mtu": "big"}))


def test_create_body_long_bridge_name() -> None:
    options = {"com.docker.network.bridge.name": "x" * 16}
    with pytest.raises(InvalidArgument, match="1 to 15"):
        parse_create_body(_body(Options=options))


def test_create_body_bad_icc() -> None:
    options = {"com.docker.network.bridge.enable_icc": "maybe"}
    with pytest.raises(InvalidArgument, match="true or false"):
        parse_create_body(_body(Options=options))


def test_endpoint_request_fields() -> None:
    config = {
        "Aliases": ["db", "db", "cache"],
        "IPAMConfig": {"IPv4Address": "10.5.0.9"},
        "MacAddress": "02:42:0A:05:00:09",
    }
    request = endpoint_request(config, USER_NETWORK)
    assert request.aliases == ("db", "cache")
    assert request.address == IPv4Address("10.5.0.9")
    assert request.mac == "02:42:0a:05:00:09"


def test_endpoint_request_address_outside() -> None:
    with pytest.raises(InvalidArgument, match="not a host address of subnet 10.5.0.0/24"):
        endpoint_request({"IPAMConfig": {"IPv4Address": "10.9.0.9"}}, USER_NETWORK)


def test_endpoint_request_ip_on_default() -> None:
    with pytest.raises(InvalidArgument, match="user defined networks only"):
        endpoint_request({"IPAMConfig": {"IPv4Address": "172.17.0.9"}}, DEFAULT_NETWORK)


def test_endpoint_request_alias_on_default() -> None:
    with pytest.raises(InvalidArgument, match="network-scoped alias"):
        endpoint_request({"Aliases": ["db"]}, DEFAULT_NETWORK)


def test_endpoint_request_ipv6_on_default() -> None:
    with pytest.raises(InvalidArgument, match="user defined networks only"):
        endpoint_request({"IPAMConfig": {"IPv6Address": "fd00::9"}}, DEFAULT_NETWORK)


def test_endpoint_request_ipv6_on_user() -> None:
    with pytest.raises(InvalidArgument, match="network back has no IPv6 subnet"):
        endpoint_request({"IPAMConfig": {"IPv6Address": "fd00::9"}}, USER_NETWORK)


@pytest.mark.parametrize("field", ["IPv4Address", "IPv6Address"])
def test_predefined_endpoint_static_address(field: str) -> None:
    with pytest.raises(InvalidArgument, match="user defined networks only"):
        check_predefined_endpoint({"IPAMConfig": {field: "172.18.0.50"}})


def test_predefined_endpoint_alias() -> None:
    with pytest.raises(InvalidArgument, match="network-scoped alias"):
        check_predefined_endpoint({"Aliases": ["db"]})


def test_predefined_endpoint_empty_passes() -> None:
    check_predefined_endpoint({"IPAMConfig": {}, "Aliases": None})


def test_mac_multicast_rejected() -> None:
    with pytest.raises(InvalidArgument, match="multicast"):
        check_mac("01:00:5e:00:00:01")


def test_mac_garbage_rejected() -> None:
    with pytest.raises(InvalidArgument, match="six hex bytes"):
        check_mac("02:42")


def test_network_name_of_modes() -> None:
    assert network_name_of("default") == "bridge"
    assert network_name_of("bridge") == "bridge"
    assert network_name_of("back") == "back"
    assert network_name_of("host") is None
    assert network_name_of("none") is None
    assert network_name_of("container:abc") is None


def test_prune_until_forms() -> None:
    assert _prune_until([]) is None
    assert _prune_until(["1700000000"]) == 1700000000.0
    assert _prune_until(["2023-11-14T22:13:20Z"]) == 1700000000.0
    hours_ago = time.time() - _prune_until(["1h30m"])  # type: ignore[operator]
    assert 5399 < hours_ago < 5410


def test_prune_until_garbage() -> None:
    with pytest.raises(InvalidArgument, match="invalid filter 'until=soon'"):
        _prune_until(["soon"])
