"""Volume records and the mount points of containers, in the engine's SQLite database.

Two tables, each mirrored in memory because every container create and inspect reads
them::

    volume_volumes   one row per volume: name, driver, labels and options (JSON),
                     created (RFC 3339), anonymous (0 or 1)
    volume_mounts    one row per container: its id and, as a JSON list, the mount points
                     that come from volumes or from --volumes-from

A mount point is what inspect shows under ``Mounts`` (docker's shape: Type, Name, Source,
Destination, Driver, Mode, RW, Propagation), and a volume is in use while any container's
points name it. Each change is one statement, so a crash leaves a row old or new.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Volume:
    """One volume of the local driver."""

    name: str
    driver: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    # The driver options (type, o, device); None when the creator gave none.
    options: dict[str, str] | None = None
    created: str = ""
    # Made for a container (an image's VOLUME, -v /path); pruned by default.
    anonymous: bool = False


class VolumeStore:
    """Volume rows and mount point rows, mirrored in memory. Used from the event loop."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS volume_volumes ("
                " name TEXT PRIMARY KEY, driver TEXT NOT NULL, labels TEXT NOT NULL,"
                " options TEXT NOT NULL, created TEXT NOT NULL, anonymous INTEGER NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS volume_mounts ("
                " container_id TEXT PRIMARY KEY, points TEXT NOT NULL)"
            )
        self._volumes: dict[str, Volume] = {}
        for name, driver, labels, options, created, anonymous in db.execute(
            "SELECT name, driver, labels, options, created, anonymous FROM volume_volumes"
        ):
            self._volumes[name] = Volume(
                name, driver, json.loads(labels), json.loads(options), created, bool(anonymous)
            )
        self._mounts: dict[str, list[dict[str, Any]]] = {}
        for container_id, points in db.execute("SELECT container_id, points FROM volume_mounts"):
            self._mounts[container_id] = json.loads(points)

    # Volumes

    def add(self, volume: Volume) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO volume_volumes (name, driver, labels, options, created, anonymous)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    volume.name,
                    volume.driver,
                    json.dumps(volume.labels),
                    json.dumps(volume.options),
                    volume.created,
                    int(volume.anonymous),
                ),
            )
        self._volumes[volume.name] = volume

    def remove(self, name: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM volume_volumes WHERE name = ?", (name,))
        self._volumes.pop(name, None)

    def get(self, name: str) -> Volume | None:
        return self._volumes.get(name)

    def all(self) -> list[Volume]:
        return sorted(self._volumes.values(), key=lambda volume: volume.name)

    # Mount points

    def add_mount_points(self, container_id: str, points: list[dict[str, Any]]) -> None:
        """Record a new container's mount points."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO volume_mounts (container_id, points) VALUES (?, ?)",
                (container_id, json.dumps(points)),
            )
        self._mounts[container_id] = list(points)

    def remove_mount_points(self, container_id: str) -> list[dict[str, Any]]:
        """Forget a container's mount points and return them."""
        with self._db:
            self._db.execute("DELETE FROM volume_mounts WHERE container_id = ?", (container_id,))
        return self._mounts.pop(container_id, [])

    def mount_points(self, container_id: str) -> list[dict[str, Any]]:
        return list(self._mounts.get(container_id, []))

    def container_ids(self) -> set[str]:
        return set(self._mounts)

    def users(self, name: str) -> list[str]:
        """Return the ids of the containers that mount volume ``name``."""
        return [
            container_id
            for container_id, points in self._mounts.items()
            if any(point.get("Type") == "volume" and point.get("Name") == name for point in points)
        ]
