"""Network and endpoint records in the engine's SQLite database.

Tables (each change is one transaction)::

    network_networks    id, unique name, driver, subnet, gateway, bridge interface name,
                        ip_range, internal, attachable, labels and options (JSON objects),
                        created (RFC 3339), mtu
    network_endpoints   container id, network id, address, MAC, host-side veth name,
                        aliases (JSON list), interface name inside the container,
                        requested address (the address a client asked for, or NULL)

Databases made before the columns after ``bridge`` and ``veth`` existed are migrated on
open by adding those columns with their defaults. A network row without a ``created`` time
gets the time of that open, because clients such as the docker CLI fail to parse an empty
Created.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

# The MTU of a network whose options set none, as docker's bridge driver uses.
DEFAULT_MTU = 1500

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

# Columns added after the first schema, with their definitions for ALTER TABLE ADD COLUMN.
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "network_networks": (
        ("ip_range", "TEXT"),
        ("internal", "INTEGER NOT NULL DEFAULT 0"),
        ("attachable", "INTEGER NOT NULL DEFAULT 0"),
        ("labels", "TEXT NOT NULL DEFAULT '{}'"),
        ("options", "TEXT NOT NULL DEFAULT '{}'"),
        ("created", "TEXT NOT NULL DEFAULT ''"),
        ("mtu", f"INTEGER NOT NULL DEFAULT {DEFAULT_MTU}"),
    ),
    "network_endpoints": (
        ("aliases", "TEXT NOT NULL DEFAULT '[]'"),
        ("interface", "TEXT NOT NULL DEFAULT 'eth0'"),
        ("requested_address", "TEXT"),
    ),
}

NETWORK_COLUMNS = (
    "id, name, driver, subnet, gateway, bridge, ip_range, internal, attachable, labels, "
    "options, created, mtu"
)
ENDPOINT_COLUMNS = (
    "container_id, network_id, address, mac, veth, aliases, interface, requested_address"
)


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    subnet: IPv4Network
    gateway: IPv4Address
    bridge: str
    # The part of the subnet that addresses are allocated from; None means all of it.
    ip_range: IPv4Network | None = None
    # An internal network has no route out: containers on it get no default route.
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    created: str = ""
    mtu: int = DEFAULT_MTU


@dataclass(frozen=True)
class Endpoint:
    container_id: str
    network_id: str
    address: IPv4Address
    mac: str
    veth: str
    aliases: tuple[str, ...] = ()
    interface: str = "eth0"
    requested_address: IPv4Address | None = None


def _now() -> str:
    # RFC 3339 in UTC, which the Engine API's Created fields use.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class NetworkStore:
    """The ``network_`` tables of one engine database."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        # Incremented by every write method below, which are the only writers of these
        # tables, so that a reader can cache what it derives from them (the name server).
        self.generation = 0
        self._db.executescript(SCHEMA)
        self._add_missing_columns()
        self._fill_missing_created()

    def _add_missing_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, definition in columns:
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")

    def _fill_missing_created(self) -> None:
        with self._db:
            self._db.execute(
                "UPDATE network_networks SET created = ? WHERE created = ''", (_now(),)
            )

    def networks(self) -> list[Network]:
        rows = self._db.execute(f"SELECT {NETWORK_COLUMNS} FROM network_networks").fetchall()
        return [_network(row) for row in rows]

    def by_name(self, name: str) -> Network | None:
        row = self._db.execute(
            f"SELECT {NETWORK_COLUMNS} FROM network_networks WHERE name = ?", (name,)
        ).fetchone()
        return _network(row) if row else None

    def by_id(self, network_id: str) -> Network | None:
        row = self._db.execute(
            f"SELECT {NETWORK_COLUMNS} FROM network_networks WHERE id = ?", (network_id,)
        ).fetchone()
        return _network(row) if row else None

    def add_network(self, network: Network) -> None:
        with self._db:
            self._db.execute(
                f"INSERT INTO network_networks ({NETWORK_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    network.id,
                    network.name,
                    network.driver,
                    str(network.subnet),
                    str(network.gateway),
                    network.bridge,
                    str(network.ip_range) if network.ip_range else None,
                    int(network.internal),
                    int(network.attachable),
                    json.dumps(network.labels),
                    json.dumps(network.options),
                    network.created or _now(),
                    network.mtu,
                ),
            )
        self.generation += 1

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
        self.generation += 1

    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        query = f"SELECT {ENDPOINT_COLUMNS} FROM network_endpoints"
        if network_id is None:
            rows = self._db.execute(query).fetchall()
        else:
            rows = self._db.execute(query + " WHERE network_id = ?", (network_id,)).fetchall()
        return [_endpoint(row) for row in rows]

    def endpoints_of(self, container_id: str) -> list[Endpoint]:
        rows = self._db.execute(
            f"SELECT {ENDPOINT_COLUMNS} FROM network_endpoints WHERE container_id = ? "
            "ORDER BY length(interface), interface",
            (container_id,),
        ).fetchall()
        return [_endpoint(row) for row in rows]

    def add_endpoint(self, endpoint: Endpoint) -> None:
        with self._db:
            self._db.execute(
                f"INSERT INTO network_endpoints ({ENDPOINT_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    endpoint.container_id,
                    endpoint.network_id,
                    str(endpoint.address),
                    endpoint.mac,
                    endpoint.veth,
                    json.dumps(list(endpoint.aliases)),
                    endpoint.interface,
                    str(endpoint.requested_address) if endpoint.requested_address else None,
                ),
            )
        self.generation += 1

    def remove_endpoint(self, container_id: str, network_id: str) -> None:
        with self._db:
            self._db.execute(
                "DELETE FROM network_endpoints WHERE container_id = ? AND network_id = ?",
                (container_id, network_id),
            )
        self.generation += 1

    def remove_endpoints(self, container_id: str) -> None:
        with self._db:
            self._db.execute(
                "DELETE FROM network_endpoints WHERE container_id = ?", (container_id,)
            )
        self.generation += 1


def _network(row: tuple[Any, ...]) -> Network:
    return Network(
        id=row[0],
        name=row[1],
        driver=row[2],
        subnet=IPv4Network(row[3]),
        gateway=IPv4Address(row[4]),
        bridge=row[5],
        ip_range=IPv4Network(row[6]) if row[6] else None,
        internal=bool(row[7]),
        attachable=bool(row[8]),
        labels=json.loads(row[9]),
        options=json.loads(row[10]),
        created=row[11],
        mtu=int(row[12]),
    )


def _endpoint(row: tuple[Any, ...]) -> Endpoint:
    return Endpoint(
        container_id=row[0],
        network_id=row[1],
        address=IPv4Address(row[2]),
        mac=row[3],
        veth=row[4],
        aliases=tuple(json.loads(row[5])),
        interface=row[6],
        requested_address=IPv4Address(row[7]) if row[7] else None,
    )
