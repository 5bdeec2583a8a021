"""Exec records on disk, so that execs outlive a restart of ketchd.

One JSON file per exec in its container's directory::

    <data_root>/containers/<container id>/execs/<exec id>.json

A record is written whole to a temporary name and renamed over the old one, so a crash
leaves the old record or the new one. The files go with the container's directory when
the container is removed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ketch.engine.store import ContainerPaths

logger = logging.getLogger(__name__)


class ExecRecords:
    """The exec records of every container under one data root."""

    def __init__(self, paths: ContainerPaths) -> None:
        self._paths = paths

    def directory(self, container_id: str) -> Path:
        return self._paths.directory(container_id) / "execs"

    def save(self, container_id: str, exec_id: str, record: dict[str, Any]) -> None:
        """Write the record of one exec. A failure is logged, not raised, because the exec
        itself works without its record."""
        directory = self.directory(container_id)
        path = directory / f"{exec_id}.json"
        temporary = directory / f".{exec_id}.json.tmp"
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            temporary.write_text(json.dumps(record))
            os.replace(temporary, path)
        except OSError as error:
            # NOTE: a record that cannot be written makes that exec unknown after a restart.
            logger.error("failed to write the record of exec %s: %s", exec_id, error)

    def load(self, container_id: str) -> list[dict[str, Any]]:
        """Return the container's exec records, skipping unreadable ones with a warning."""
        directory = self.directory(container_id)
        try:
            paths = [path for path in directory.iterdir() if path.suffix == ".json"]
        except FileNotFoundError:
            return []
        records = []
        for path in paths:
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError) as error:
                logger.warning("skipping the unreadable exec record %s: %s", path, error)
        return records

    def remove(self, container_id: str, exec_id: str) -> None:
        (self.directory(container_id) / f"{exec_id}.json").unlink(missing_ok=True)
