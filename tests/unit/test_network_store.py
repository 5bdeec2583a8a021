"""Network and endpoint records in SQLite."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from ketch.network.store import SCHEMA, Endpoint, Network, NetworkStore

NETWORK = Network(
    id="n" * 64,
    name="bridge",
    driver="bridge",
    subnet=IPv4Network("172.17.0.0/16"),
    gateway=IPv4Address("172.17.0.1"),
    bridge="ketch0",
    created="2026-12-04T22:00:00Z",
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


def test_store_user_network_round_trip() -> None:
    store = NetworkStore(sqlite3.connect(":memory:", isolation_level=None))
    network = replace(
        NETWORK,
        id="u" * 64,
        name="backend",
        bridge="br-uuuuuuuuuuuu",
        ip_range=IPv4Network("172.17.1.0/24"),
        internal=True,
        attachable=True,
        labels={"team": "a"},
        options={"com.docker.network.driver.mtu": "1400"},
        created="2026-12-04T23:00:00.000000000Z",
        mtu=1400,
    )
    store.add_network(network)
    assert store.by_id(network.id) == network


def test_store_endpoint_aliases_round_trip() -> None:
    store = _store()
    endpoint = replace(
        ENDPOINT,
        network_id="m" * 64,
        aliases=("db", "cache"),
        interface="eth1",
        requested_address=IPv4Address("172.17.0.9"),
    )
    store.add_endpoint(endpoint)
    assert store.endpoints("m" * 64) == [endpoint]


def test_store_migrates_first_schema() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO network_networks VALUES (?, ?, ?, ?, ?, ?)",
        ("n" * 64, "bridge", "bridge", "172.17.0.0/16", "172.17.0.1", "ketch0"),
    )
    db.execute(
        "INSERT INTO network_endpoints VALUES (?, ?, ?, ?, ?)",
        ("c" * 64, "n" * 64, "172.17.0.2", "02:42:ac:11:00:02", "vethccccccccccc"),
    )
    store = NetworkStore(db)
    migrated = store.by_name("bridge")
    assert migrated is not None
    # The migration gives the row the time of the open, checked in test_network_store_migration.
    assert replace(migrated, created=NETWORK.created) == NETWORK
    assert store.endpoints_of("c" * 64) == [ENDPOINT]


def test_store_remove_one_endpoint() -> None:
    store = _store()
    store.remove_endpoint("c" * 64, "n" * 64)
    assert store.endpoints() == []


def test_store_endpoints_in_interface_order() -> None:
    store = NetworkStore(sqlite3.connect(":memory:", isolation_level=None))
    for index in (10, 2, 0):
        network_id = f"{index:02d}" * 32
        store.add_network(
            replace(
                NETWORK,
                id=network_id,
                name=f"net{index}",
                subnet=IPv4Network(f"10.{index}.0.0/24"),
                gateway=IPv4Address(f"10.{index}.0.1"),
                bridge=f"br{index}",
            )
        )
        store.add_endpoint(replace(ENDPOINT, network_id=network_id, interface=f"eth{index}"))
    interfaces = [endpoint.interface for endpoint in store.endpoints_of("c" * 64)]
    assert interfaces == ["eth0", "eth2", "eth10"]


def test_store_generation_counts_writes() -> None:
    store = NetworkStore(sqlite3.connect(":memory:", isolation_level=None))
    generations = [store.generation]

    store.add_network(NETWORK)
    generations.append(store.generation)
    store.add_endpoint(ENDPOINT)
    generations.append(store.generation)
    store.remove_endpoint(ENDPOINT.container_id, ENDPOINT.network_id)
    generations.append(store.generation)
    store.add_endpoint(ENDPOINT)
    store.remove_endpoints(ENDPOINT.container_id)
    generations.append(store.generation)
    store.remove_network(NETWORK.id)
    generations.append(store.generation)

    assert generations == [0, 1, 2, 3, 5, 6]


def test_store_generation_unchanged_by_reads() -> None:
    store = _store()
    before = store.generation

    store.networks()
    store.endpoints()
    store.endpoints_of(ENDPOINT.container_id)
    store.by_name(NETWORK.name)

    assert store.generation == before
