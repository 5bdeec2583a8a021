"""The supervisor's record of each container, on disk under the exec root.

Layout::

    <exec_root>/supervisor/
        <id>.json        one record per container, written at create, start and exit
        .<id>.json.tmp   a record being written; renamed over <id>.json when complete

A record is written to a temporary file, fsynced and renamed, so a crash leaves the old
record or the new one. The exit code in a record is what ``state`` and ``wait`` return
after ketchd reconnects, and what a restarted supervisor reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ketch.supervisor.plainlog import get_logger

# False at run time: the supervisor process leaves typing and dataclasses out, which saves
# it about 1.5 MiB of memory, a fixed cost of every ketch host. Type checkers take the
# branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

CREATED = "created"
RUNNING = "running"
STOPPED = "stopped"


class ContainerRecord:
    """A container's lifecycle as the supervisor saw it."""

    # The fields, in the order of the record's JSON object.
    FIELDS = (
        "id",
        "bundle",
        "log_path",
        "pid",
        "status",
        "exit_code",
        "created_at",
        "started_at",
        "finished_at",
    )

    def __init__(
        self,
        id: str,
        bundle: str,
        log_path: str,
        pid: int,
        status: str = CREATED,
        exit_code: int | None = None,
        created_at: str | None = None,
        started_at: str | None = None,
        finished_at: str | None = None,
    ) -> None:
        self.id = id
        self.bundle = bundle
        self.log_path = log_path
        self.pid = pid
        self.status = status
        self.exit_code = exit_code
        self.created_at = created_at
        self.started_at = started_at
        self.finished_at = finished_at

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as the JSON object that ``RecordStore.save`` writes."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContainerRecord):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"ContainerRecord({fields})"

    def to_state(self) -> dict[str, Any]:
        """Return the protocol's state object for this container."""
        return {
            "id": self.id,
            "status": self.status,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class RecordStore:
    """The directory of container records."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def save(self, record: ContainerRecord) -> None:
        """Write ``record`` atomically, replacing any earlier version."""
        path = self.directory / f"{record.id}.json"
        temporary = self.directory / f".{record.id}.json.tmp"
        data = json.dumps(record.to_dict(), indent=1).encode() + b"\n"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)

    def remove(self, container_id: str) -> None:
        try:
            os.unlink(self.directory / f"{container_id}.json")
        except FileNotFoundError:
            pass

    def load_all(self) -> list[ContainerRecord]:
        """Read every record; a record that cannot be parsed is logged and skipped."""
        records = []
        for path in sorted(self.directory.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                records.append(ContainerRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as error:
                log.error("skipping container record %s: cannot read it: %s", path, error)
        return records
