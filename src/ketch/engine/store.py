"""Container records and their table in the engine's SQLite database.

One row per container in ``engine_containers`` (id, unique name, the record as JSON), and
engine-wide values such as the engine's own id in ``engine_meta``. Each change is one
transaction, so a crash leaves a container's record either old or new. The store keeps
every record in memory as well, because listing and resolving names happen on every
request and the database is written far less often than it is read.

The files that belong to a container live under the data root::

    <data_root>/containers/<id>/
        bundle/config.json      the OCI spec handed to the supervisor
        <id>-json.log           stdout and stderr in docker's json-file format
        hostname, hosts         bind-mounted over /etc/hostname and /etc/hosts
        execs/<exec id>.json    exec records, see ketch.engine.exec_records
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketch.engine.timestamps import ZERO_TIME


@dataclass
class ContainerState:
    """The runtime state docker reports as ``State`` in container inspect."""

    status: str = "created"  # created | running | exited
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    oom_killed: bool = False
    removing: bool = False
    paused: bool = False
    # Waiting for a restart by its restart policy.
    restarting: bool = False
    # Stopped or killed by a user, which keeps restart policies from restarting it.
    manually_stopped: bool = False
    # State.Health of a container with a healthcheck: Status, FailingStreak, Log.
    health: dict[str, Any] | None = None


@dataclass
class Container:
    """One container: what it was created from and its last known state."""

    id: str
    name: str  # "/name", as the API stores it
    created: str
    image_id: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    rootfs: str
    state: ContainerState = field(default_factory=ContainerState)
    platform: str = "linux"
    restart_count: int = 0
    # Per network name, the endpoint fields of inspect's NetworkSettings.Networks, plus
    # "SandboxKey": the path of the pinned network namespace.
    network_endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state.status == "running"

    @property
    def auto_remove(self) -> bool:
        return bool(self.host_config.get("AutoRemove"))

    def to_json(self) -> str:
        # vars() instead of dataclasses.asdict(), which deep-copies config on every save.
        record = {**vars(self), "state": vars(self.state)}
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Container:
        data = json.loads(text)
        state = ContainerState(**data.pop("state"))
        return cls(state=state, **data)


class ContainerPaths:
    """The paths of a container's files under the data root."""

    def __init__(self, data_root: Path) -> None:
        self.root = data_root / "containers"

    def directory(self, container_id: str) -> Path:
        return self.root / container_id

    def bundle(self, container_id: str) -> Path:
        return self.directory(container_id) / "bundle"

    def log(self, container_id: str) -> Path:
        return self.directory(container_id) / f"{container_id}-json.log"

    def hostname(self, container_id: str) -> Path:
        return self.directory(container_id) / "hostname"

    def hosts(self, container_id: str) -> Path:
        return self.directory(container_id) / "hosts"


class ContainerStore:
    """Container records in SQLite, mirrored in memory. Used from the event loop only."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS engine_containers ("
                " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, record TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS engine_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
        self._containers: dict[str, Container] = {}
        for (record,) in db.execute("SELECT record FROM engine_containers"):
            container = Container.from_json(record)
            self._containers[container.id] = container

    def engine_id(self) -> str:
        """Return this engine's persistent id, made on first use (``docker info``'s ID)."""
        row = self._db.execute("SELECT value FROM engine_meta WHERE key = 'engine_id'").fetchone()
        if row is not None:
            return str(row[0])
        value = secrets.token_hex(16)
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO engine_meta (key, value) VALUES ('engine_id', ?)", (value,)
            )
        return self.engine_id()

    def add(self, container: Container) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO engine_containers (id, name, record) VALUES (?, ?, ?)",
                (container.id, container.name, container.to_json()),
            )
        self._containers[container.id] = container

    def save(self, container: Container) -> None:
        """Write the container's current record, in one transaction."""
        with self._db:
            self._db.execute(
                "UPDATE engine_containers SET name = ?, record = ? WHERE id = ?",
                (container.name, container.to_json(), container.id),
            )

    def remove(self, container_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM engine_containers WHERE id = ?", (container_id,))
        self._containers.pop(container_id, None)

    def get(self, container_id: str) -> Container | None:
        return self._containers.get(container_id)

    def all(self) -> list[Container]:
        return list(self._containers.values())

    def by_name(self, name: str) -> Container | None:
        for container in self._containers.values():
            if container.name == name:
                return container
        return None

    def names(self) -> set[str]:
        return {container.name for container in self._containers.values()}

    def ids(self) -> set[str]:
        return set(self._containers)
