"""Address management: which subnet a network gets and which address each endpoint gets.

Pure functions over ``ipaddress`` objects, so that the choice can be tested without root.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from ketch.errors import Forbidden, InvalidArgument, Unavailable

# Docker's default address pools: 172.17.0.0/16 to 172.31.0.0/16, then 192.168.0.0/20 blocks.
DEFAULT_POOLS: tuple[IPv4Network, ...] = tuple(
    [IPv4Network(f"172.{second}.0.0/16") for second in range(17, 32)]
    + [IPv4Network(f"192.168.{third}.0/20") for third in range(0, 256, 16)]
)


def choose_subnet(
    taken: Iterable[IPv4Network], pools: Iterable[IPv4Network] = DEFAULT_POOLS
) -> IPv4Network:
    """Return the first pool that overlaps none of ``taken`` (host routes, other networks)."""
    taken_list = list(taken)
    for pool in pools:
        if not any(pool.overlaps(other) for other in taken_list):
            return pool
    raise Unavailable(
        "no free subnet for a network: every default address pool overlaps a route of the "
        "host or another network"
    )


def check_free(
    subnet: IPv4Network,
    networks: Iterable[tuple[str, IPv4Network]],
    host_routes: Iterable[IPv4Network],
) -> None:
    """Raise Forbidden, naming both, when ``subnet`` overlaps another network's subnet
    (given as name and subnet) or a route of the host."""
    for name, other in networks:
        if subnet.overlaps(other):
            raise Forbidden(
                f"Pool overlaps with other one on this address space: subnet {subnet} "
                f"overlaps subnet {other} of network {name}"
            )
    for route in host_routes:
        if subnet.overlaps(route):
            raise Forbidden(
                f"Pool overlaps with other one on this address space: subnet {subnet} "
                f"overlaps the host's route to {route}"
            )


def gateway_address(subnet: IPv4Network) -> IPv4Address:
    """Return the subnet's first host address, which the bridge takes."""
    return subnet.network_address + 1


def parse_subnet(text: str, field: str) -> IPv4Network:
    """Parse an IPv4 subnet in CIDR form; InvalidArgument names ``field`` when it is not one."""
    try:
        subnet = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(
            f"invalid {field} {text!r}: expected an IPv4 subnet in CIDR form, such as 10.10.0.0/16"
        ) from None
    if not isinstance(subnet, IPv4Network):
        raise InvalidArgument(f"invalid {field} {text!r}: only IPv4 subnets are supported")
    if subnet.prefixlen > 30:
        raise InvalidArgument(
            f"invalid {field} {text!r}: the prefix must be /30 or shorter, to leave room for "
            "a gateway and an endpoint"
        )
    return subnet


def parse_address(text: str, field: str) -> IPv4Address:
    """Parse an IPv4 address; InvalidArgument names ``field`` when it is not one."""
    try:
        return IPv4Address(text)
    except ValueError:
        raise InvalidArgument(
            f"invalid {field} {text!r}: expected an IPv4 address, such as 10.10.0.5"
        ) from None


def check_in_subnet(address: IPv4Address, subnet: IPv4Network, field: str) -> None:
    """Raise InvalidArgument unless ``address`` is a host address of ``subnet``."""
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(
            f"invalid {field} {address}: it is not a host address of subnet {subnet}"
        )


def allocate_address(
    subnet: IPv4Network,
    in_use: Iterable[IPv4Address],
    ip_range: IPv4Network | None = None,
    gateway: IPv4Address | None = None,
) -> IPv4Address:
    """Return the lowest free host address of ``subnet`` inside ``ip_range`` (all of the
    subnet when None), never the gateway (the subnet's first host address when None)."""
    used = set(in_use)
    used.add(gateway if gateway is not None else gateway_address(subnet))
    pool = ip_range if ip_range is not None else subnet
    for address in pool:
        if address in (subnet.network_address, subnet.broadcast_address):
            continue
        if address not in used:
            return address
    raise Unavailable(f"no free address left in {'ip-range' if ip_range else 'subnet'} {pool}")


def mac_address(address: IPv4Address) -> str:
    """Return docker's MAC for an address: 02:42 followed by the address's four bytes."""
    return "02:42:" + ":".join(f"{byte:02x}" for byte in address.packed)


def parse_network(text: str) -> IPv4Network | None:
    """Return ``text`` as an IPv4 network, or None for a default route or an IPv6 one."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if not isinstance(network, IPv4Network) or network.prefixlen == 0:
        return None
    return network
