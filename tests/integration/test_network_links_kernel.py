"""ketch's links made over its own rtnetlink client, checked with iproute2's ``ip``.

The bridge and the host end of the veth pair live in one network namespace that the test
makes, and the container end moves into a second one, so nothing touches the host's links.
"""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from ketch.network import links
from ketch.network.rtnetlink import RouteSocket
from support.netns import NetworkNamespace, entered, network_namespace

BRIDGE = "ktest0"
HOST_END = "ktestveth0"
PEER = "ktestpeer0"
SUBNET = IPv4Network("10.231.7.0/24")
GATEWAY = IPv4Address("10.231.7.1")
ADDRESS = IPv4Address("10.231.7.2")
MAC = "02:42:0a:e7:07:02"
MTU = 1400


@pytest.fixture
def host_namespace() -> Iterator[NetworkNamespace]:
    with network_namespace("ketch-rtnl-host") as namespace:
        yield namespace


@pytest.fixture
def container_namespace() -> Iterator[NetworkNamespace]:
    with network_namespace("ketch-rtnl-ctr") as namespace:
        yield namespace


def ip_json(namespace: NetworkNamespace, *args: str) -> Any:
    result = subprocess.run(
        ["ip", "-n", namespace.name, "-j", *args], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def link_details(namespace: NetworkNamespace, name: str) -> dict[str, Any]:
    (details,) = ip_json(namespace, "-d", "link", "show", "dev", name)
    return details


def link_names(namespace: NetworkNamespace) -> set[str]:
    return {link["ifname"] for link in ip_json(namespace, "link", "show")}


def connect_container(host: NetworkNamespace, container: NetworkNamespace) -> None:
    with entered(host):
        links.ensure_bridge(BRIDGE, GATEWAY, SUBNET, MTU, alias="ketch-bridge: test")
        links.add_veth(HOST_END, PEER, BRIDGE, Path(container.path), MTU, alias="ketch-veth: test")
    config = links.InterfaceConfig("eth0", ADDRESS, SUBNET, MAC, GATEWAY)
    links.configure_container_interface(Path(container.path), PEER, config)


def test_bridge_matches_iproute2(
    host_namespace: NetworkNamespace, container_namespace: NetworkNamespace
) -> None:
    connect_container(host_namespace, container_namespace)

    bridge = link_details(host_namespace, BRIDGE)
    assert bridge["linkinfo"]["info_kind"] == "bridge"
    assert bridge["mtu"] == MTU
    assert bridge["ifalias"] == "ketch-bridge: test"
    assert "UP" in bridge["flags"]
    (address,) = ip_json(host_namespace, "-4", "addr", "show", "dev", BRIDGE)[0]["addr_info"]
    assert address["local"] == str(GATEWAY)
    assert address["prefixlen"] == SUBNET.prefixlen


def test_veth_host_end_matches_iproute2(
    host_namespace: NetworkNamespace, container_namespace: NetworkNamespace
) -> None:
    connect_container(host_namespace, container_namespace)

    host_end = link_details(host_namespace, HOST_END)
    assert host_end["linkinfo"]["info_kind"] == "veth"
    assert host_end["master"] == BRIDGE
    assert host_end["mtu"] == MTU
    assert host_end["ifalias"] == "ketch-veth: test"
    assert "UP" in host_end["flags"]
    # The peer left for the container's namespace.
    assert PEER not in link_names(host_namespace)


def test_container_end_matches_iproute2(
    host_namespace: NetworkNamespace, container_namespace: NetworkNamespace
) -> None:
    connect_container(host_namespace, container_namespace)

    assert link_names(container_namespace) == {"lo", "eth0"}
    interface = link_details(container_namespace, "eth0")
    assert interface["linkinfo"]["info_kind"] == "veth"
    assert interface["address"] == MAC
    assert interface["mtu"] == MTU
    assert "UP" in interface["flags"]
    (address,) = ip_json(container_namespace, "-4", "addr", "show", "dev", "eth0")[0]["addr_info"]
    assert address["local"] == str(ADDRESS)
    assert address["prefixlen"] == SUBNET.prefixlen
    routes = ip_json(container_namespace, "route", "show", "default")
    assert [(route["gateway"], route["dev"]) for route in routes] == [(str(GATEWAY), "eth0")]


def test_delete_veth_removes_both_ends(
    host_namespace: NetworkNamespace, container_namespace: NetworkNamespace
) -> None:
    connect_container(host_namespace, container_namespace)

    with entered(host_namespace):
        links.delete_link(HOST_END)
        links.delete_link(HOST_END)
        assert links.link_exists(BRIDGE)
        links.delete_link(BRIDGE)
        assert not links.link_exists(BRIDGE)

    assert link_names(host_namespace) == {"lo"}
    assert link_names(container_namespace) == {"lo"}


def test_second_bridge_of_same_name_eexist(host_namespace: NetworkNamespace) -> None:
    with entered(host_namespace), RouteSocket() as route_socket:
        route_socket.add_bridge(BRIDGE)
        with pytest.raises(OSError) as raised:
            route_socket.add_bridge(BRIDGE)

    assert raised.value.errno == errno.EEXIST
    assert str(raised.value).endswith(f"add bridge {BRIDGE}: File exists")


def test_ensure_bridge_twice_keeps_one_address(host_namespace: NetworkNamespace) -> None:
    with entered(host_namespace):
        links.ensure_bridge(BRIDGE, GATEWAY, SUBNET, MTU)
        links.ensure_bridge(BRIDGE, GATEWAY, SUBNET, MTU)

    addresses = ip_json(host_namespace, "-4", "addr", "show", "dev", BRIDGE)[0]["addr_info"]
    assert [address["local"] for address in addresses] == [str(GATEWAY)]


def test_host_routes_skip_own_bridge(host_namespace: NetworkNamespace) -> None:
    with entered(host_namespace):
        links.ensure_bridge(BRIDGE, GATEWAY, SUBNET, MTU)
        with_bridge = links.host_routes()
        without_bridge = links.host_routes([BRIDGE])

    assert with_bridge == [SUBNET]
    assert without_bridge == []


def test_owned_links_read_aliases(
    host_namespace: NetworkNamespace, container_namespace: NetworkNamespace
) -> None:
    connect_container(host_namespace, container_namespace)

    with entered(host_namespace):
        owned = links.owned_links("ketch-")

    assert owned == {BRIDGE: "ketch-bridge: test", HOST_END: "ketch-veth: test"}


def test_restore_default_route_tries_next_gateway(
    host_namespace: NetworkNamespace, container_namespace: NetworkNamespace
) -> None:
    connect_container(host_namespace, container_namespace)
    subprocess.run(["ip", "-n", container_namespace.name, "route", "del", "default"], check=True)

    # No link reaches 10.99.0.1, so the kernel rejects the first route with ENETUNREACH.
    unreachable = IPv4Address("10.99.0.1")
    links.restore_default_route(Path(container_namespace.path), [unreachable, GATEWAY])

    routes = ip_json(container_namespace, "route", "show", "default")
    assert [route["gateway"] for route in routes] == [str(GATEWAY)]


def test_veth_to_missing_bridge_leaves_nothing(
    host_namespace: NetworkNamespace, container_namespace: NetworkNamespace
) -> None:
    with entered(host_namespace), pytest.raises(OSError) as raised:
        links.add_veth(HOST_END, PEER, "absent0", Path(container_namespace.path))

    assert raised.value.errno == errno.ENODEV
    assert link_names(host_namespace) == {"lo"}
