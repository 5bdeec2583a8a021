"""Opening a network database made by the first schema, before ``created`` existed."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network

from ketch.network.store import Network, NetworkStore

FIRST_SCHEMA = """
CREATE TABLE network_networks (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    driver TEXT NOT NULL,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    bridge TEXT NOT NULL
);
CREATE TABLE network_endpoints (
    container_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES network_networks(id),
    address TEXT NOT NULL,
    mac TEXT NOT NULL,
    veth TEXT NOT NULL,
    PRIMARY KEY (container_id, network_id)
);
"""


def old_database() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(FIRST_SCHEMA)
    db.execute(
        "INSERT INTO network_networks VALUES (?, ?, ?, ?, ?, ?)",
        ("a" * 64, "bridge", "bridge", "172.17.0.0/16", "172.17.0.1", "ketch0"),
    )
    return db


def parsed(created: str) -> datetime:
    return datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")


def test_migration_fills_created() -> None:
    store = NetworkStore(old_database())
    network = store.by_name("bridge")
    assert network is not None
    assert parsed(network.created).year >= 2024


def test_migration_keeps_other_fields() -> None:
    store = NetworkStore(old_database())
    network = store.by_name("bridge")
    assert network is not None
    assert network.bridge == "ketch0"
    assert network.subnet == IPv4Network("172.17.0.0/16")


def test_migration_keeps_set_created() -> None:
    db = old_database()
    NetworkStore(db)
    db.execute("UPDATE network_networks SET created = '2020-01-02T03:04:05Z'")
    network = NetworkStore(db).by_name("bridge")
    assert network is not None
    assert network.created == "2020-01-02T03:04:05Z"


def test_add_network_without_created() -> None:
    store = NetworkStore(old_database())
    store.add_network(
        Network(
            id="b" * 64,
            name="plain",
            driver="bridge",
            subnet=IPv4Network("172.18.0.0/16"),
            gateway=IPv4Address("172.18.0.1"),
            bridge="br-bbbbbbbbbbbb",
        )
    )
    network = store.by_name("plain")
    assert network is not None
    assert parsed(network.created).year >= 2024
