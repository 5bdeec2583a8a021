"""Network and endpoint records in SQLite."""

from __future__ import annotations

import sqlite3
from ipaddress import IPv4Address, IPv4Network

from ketch.network.store import Endpoint, Network, NetworkStore

NETWORK = Network(
    id="n" * 64,
    name="bridge",
    driver="bridge",
    subnet=IPv4Network("172.17.0.0/16"),
    gateway=IPv4Address("172.17.0.1"),
    bridge="ketch0",
)
ENDPOINT = Endpoint(
    container_id="c" * 64,
    network_id="n" * 64,
    address=IPv4Address("172.17.0.2"),
    mac="02:42:ac:11:00:02",
    veth="vethccccccccccc",
)


def _store() -> NetworkStore:
    store = NetworkStore(sqlite3.connect(":memory:", isolation_level=None))
    store.add_network(NETWORK)
    store.add_endpoint(ENDPOINT)
    return store


def test_store_network_round_trip() -> None:
    assert _store().by_name("bridge") == NETWORK


def test_store_endpoint_round_trip() -> None:
    assert _store().endpoints_of("c" * 64) == [ENDPOINT]


def test_store_remove_endpoints() -> None:
    store = _store()
    store.remove_endpoints("c" * 64)
    assert store.endpoints() == []


def test_store_remove_network_drops_endpoints() -> None:
    store = _store()
    store.remove_network(NETWORK.id)
    assert store.networks() == []
    assert store.endpoints() == []
