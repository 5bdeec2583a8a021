"""Network and endpoint records in the engine's SQLite database.

Tables (each change is one transaction)::

    network_networks    id, unique name, driver, subnet, gateway, bridge interface name
    network_endpoints   container id, network id, address, MAC, host-side veth name
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

SCHEMA = """
CREATE TABLE IF NOT EXISTS network_networks (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    driver TEXT NOT NULL,
    subnet TEXT NOT NULL,
    gateway TEXT NOT NULL,
    bridge TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS network_endpoints (
    container_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES network_networks(id),
    address TEXT NOT NULL,
    mac TEXT NOT NULL,
    veth TEXT NOT NULL,
    PRIMARY KEY (container_id, network_id)
);
"""


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    subnet: IPv4Network
    gateway: IPv4Address
    bridge: str


@dataclass(frozen=True)
class Endpoint:
    container_id: str
    network_id: str
    address: IPv4Address
    mac: str
    veth: str


class NetworkStore:
    """The ``network_`` tables of one engine database."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._db.executescript(SCHEMA)

    def networks(self) -> list[Network]:
        rows = self._db.execute(
            "SELECT id, name, driver, subnet, gateway, bridge FROM network_networks"
        ).fetchall()
        return [_network(row) for row in rows]

    def by_name(self, name: str) -> Network | None:
        row = self._db.execute(
            "SELECT id, name, driver, subnet, gateway, bridge FROM network_networks WHERE name = ?",
            (name,),
        ).fetchone()
        return _network(row) if row else None

    def add_network(self, network: Network) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO network_networks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    network.id,
                    network.name,
                    network.driver,
                    str(network.subnet),
                    str(network.gateway),
                    network.bridge,
                ),
            )

    def remove_network(self, network_id: str) -> None:
        # The connection is in autocommit mode, so the two deletes get an explicit transaction.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM network_endpoints WHERE network_id = ?", (network_id,))
            self._db.execute("DELETE FROM network_networks WHERE id = ?", (network_id,))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        query = "SELECT container_id, network_id, address, mac, veth FROM network_endpoints"
        if network_id is None:
            rows = self._db.execute(query).fetchall()
        else:
            rows = self._db.execute(query + " WHERE network_id = ?", (network_id,)).fetchall()
        return [_endpoint(row) for row in rows]

    def endpoints_of(self, container_id: str) -> list[Endpoint]:
        return [e for e in self.endpoints() if e.container_id == container_id]

    def add_endpoint(self, endpoint: Endpoint) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO network_endpoints VALUES (?, ?, ?, ?, ?)",
                (
                    endpoint.container_id,
                    endpoint.network_id,
                    str(endpoint.address),
                    endpoint.mac,
                    endpoint.veth,
                ),
            )

    def remove_endpoints(self, container_id: str) -> None:
        with self._db:
            self._db.execute(
                "DELETE FROM network_endpoints WHERE container_id = ?", (container_id,)
            )


def _network(row: tuple[str, ...]) -> Network:
    return Network(
        id=row[0],
        name=row[1],
        driver=row[2],
        subnet=IPv4Network(row[3]),
        gateway=IPv4Address(row[4]),
        bridge=row[5],
    )


def _endpoint(row: tuple[str, ...]) -> Endpoint:
    return Endpoint(
        container_id=row[0],
        network_id=row[1],
        address=IPv4Address(row[2]),
        mac=row[3],
        veth=row[4],
    )
