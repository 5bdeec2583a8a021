"""Output of ``ketch port`` from the Ports of container inspect."""

from __future__ import annotations

import pytest

from ketch.cli.errors import UsageError
from ketch.cli.port import format_mappings, host_address, port_key, publish_bindings
from ketch.errors import NotFound

PORTS = {
    "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}],
    "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}, {"HostIp": "::", "HostPort": "5353"}],
    "9000/tcp": None,
}


def test_port_key_defaults_to_tcp() -> None:
    assert port_key("80") == "80/tcp"


def test_port_key_keeps_protocol() -> None:
    assert port_key("53/UDP") == "53/udp"


def test_port_key_invalid() -> None:
    with pytest.raises(UsageError, match="PRIVATE_PORT"):
        port_key("http")


def test_host_address_ipv6_bracketed() -> None:
    assert host_address({"HostIp": "::", "HostPort": "80"}) == "[::]:80"


def test_mappings_all_sorted_by_port() -> None:
    assert format_mappings(PORTS, None) == [
        "53/udp -> 0.0.0.0:5353",
        "53/udp -> [::]:5353",
        "8080/tcp -> 127.0.0.1:18080",
    ]


def test_mappings_one_port() -> None:
    assert format_mappings(PORTS, "8080/tcp") == ["127.0.0.1:18080"]


def test_mappings_exposed_only_not_found() -> None:
    with pytest.raises(NotFound, match="No public port '9000/tcp' published"):
        format_mappings(PORTS, "9000/tcp")


def test_publish_container_port_only() -> None:
    assert publish_bindings("80") == [("80/tcp", {"HostIp": "", "HostPort": ""})]


def test_publish_ip_host_container_udp() -> None:
    assert publish_bindings("127.0.0.1:5353:53/udp") == [
        ("53/udp", {"HostIp": "127.0.0.1", "HostPort": "5353"})
    ]


def test_publish_ipv6_address() -> None:
    assert publish_bindings("[::1]:8080:80") == [("80/tcp", {"HostIp": "::1", "HostPort": "8080"})]


def test_publish_ipv6_unbracketed() -> None:
    # The docker CLI takes all parts but the last two as the address.
    assert publish_bindings("::1:8080:80") == [("80/tcp", {"HostIp": "::1", "HostPort": "8080"})]


def test_publish_empty_host_port() -> None:
    assert publish_bindings("127.0.0.1::80") == [
        ("80/tcp", {"HostIp": "127.0.0.1", "HostPort": ""})
    ]


def test_publish_ranges_pairwise() -> None:
    assert publish_bindings("8000-8001:80-81") == [
        ("80/tcp", {"HostIp": "", "HostPort": "8000"}),
        ("81/tcp", {"HostIp": "", "HostPort": "8001"}),
    ]


def test_publish_host_range_one_port() -> None:
    assert publish_bindings("8000-8010:80") == [("80/tcp", {"HostIp": "", "HostPort": "8000-8010"})]


def test_publish_container_range_ephemeral() -> None:
    assert [key for key, _ in publish_bindings("80-82")] == ["80/tcp", "81/tcp", "82/tcp"]


@pytest.mark.parametrize(
    "value", ["http", "80/sctp", "8000-8002:80-81", "1:2:3:4", "[::1]80", "0", "90-80"]
)
def test_publish_invalid(value: str) -> None:
    with pytest.raises(ValueError):
        publish_bindings(value)


def test_publish_sctp_not_supported() -> None:
    with pytest.raises(ValueError) as raised:
        publish_bindings("8080:80/sctp")
    message = str(raised.value)
    assert "SCTP is not supported by ketch" in message
    assert "invalid protocol 'sctp'" in message
