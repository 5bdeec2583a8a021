"""Address management: which subnet a network gets and which address each endpoint gets.

Pure functions over ``ipaddress`` objects, so that the choice can be tested without root.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from ketch.errors import Unavailable

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


def gateway_address(subnet: IPv4Network) -> IPv4Address:
    """Return the subnet's first host address, which the bridge takes."""
    return subnet.network_address + 1


def allocate_address(subnet: IPv4Network, in_use: Iterable[IPv4Address]) -> IPv4Address:
    """Return the lowest free host address of ``subnet``, never the gateway."""
    used = set(in_use)
    used.add(gateway_address(subnet))
    for address in subnet.hosts():
        if address not in used:
            return address
    raise Unavailable(f"no free address left in subnet {subnet}")


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
