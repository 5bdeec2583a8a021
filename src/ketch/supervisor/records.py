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
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CREATED = "created"
RUNNING = "running"
STOPPED = "stopped"


@dataclass
class ContainerRecord:
    """A container's lifecycle as the supervisor saw it."""

    id: str
    bundle: str
    log_path: str
    pid: int
    status: str = CREATED
    exit_code: int | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

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
        data = json.dumps(asdict(record), indent=1).encode() + b"\n"
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
