"""Container root filesystems: a writable view of an image's snapshots per container,
made by the snapshotter (an overlayfs mount, or a copy).

Layout::

    <root>/containers/<container id>/
        merged/    the rootfs handed to the runtime as the bundle's rootfs
        ...        what the snapshotter keeps beside it (overlayfs's upper and work)

The ``image_rootfs`` table records which image each prepared rootfs comes from, so that
an image in use is not removed under a container. Both ``prepare`` and ``release`` may be
called again for the same container: ``prepare`` returns the existing mount and
``release`` does nothing once the directory is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ketch.errors import InvalidArgument, NotFound
from ketch.images.diff import LayerDiff
from ketch.images.metadata import transaction
from ketch.images.snapshots import Snapshotter

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS image_rootfs (
    container_id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    created TEXT NOT NULL
)
"""

CONTAINER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class RootfsManager:
    """Container root filesystems under ``<root>/containers``."""

    def __init__(self, root: Path, db: sqlite3.Connection, snapshots: Snapshotter) -> None:
        self.directory = root / "containers"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = db
        self.snapshots = snapshots
        with transaction(db):
            db.execute(SCHEMA)

    def prepare(self, container_id: str, image_id: str, top_chain_id: str | None) -> Path:
        """Mount the rootfs of ``container_id`` from the snapshot chain ending at
        ``top_chain_id`` (None for an image without layers) and return ``merged``."""
        container_dir = self._container_dir(container_id)
        merged = container_dir / "merged"
        if os.path.ismount(merged):
            return merged

        with transaction(self.db) as db:
            db.execute(
                "INSERT OR REPLACE INTO image_rootfs VALUES (?, ?, ?)",
                (container_id, image_id, datetime.now(UTC).isoformat()),
            )
        try:
            merged = self.snapshots.mount_container(container_dir, top_chain_id)
        except BaseException:
            self.release(container_id)
            raise
        log.info("made rootfs of container %s from image %s", container_id, image_id)
        return merged

    def diff(self, container_id: str, top_chain_id: str | None, out: BinaryIO) -> LayerDiff:
        """Write what ``container_id`` changed in its rootfs, made on top of
        ``top_chain_id``, to ``out`` as an uncompressed layer tar (for commit)."""
        container_dir = self._container_dir(container_id)
        if not (container_dir / "merged").is_dir():
            raise NotFound(f"container {container_id} has no rootfs")
        return self.snapshots.diff_container(container_dir, top_chain_id, out)

    def release(self, container_id: str) -> None:
        """Unmount and delete the rootfs of ``container_id``. Does nothing when it is gone."""
        container_dir = self._container_dir(container_id)
        self.snapshots.unmount_container(container_dir)
        if container_dir.exists():
            shutil.rmtree(container_dir)
        with transaction(self.db) as db:
            db.execute("DELETE FROM image_rootfs WHERE container_id = ?", (container_id,))

    def image_of(self, container_id: str) -> str:
        """Return the ID of the image the rootfs of ``container_id`` comes from."""
        row = self.db.execute(
            "SELECT image_id FROM image_rootfs WHERE container_id = ?", (container_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"container {container_id} has no rootfs")
        return str(row[0])

    def users(self, image_id: str) -> list[str]:
        """Return the IDs of containers whose rootfs comes from ``image_id``."""
        rows = self.db.execute(
            "SELECT container_id FROM image_rootfs WHERE image_id = ? ORDER BY container_id",
            (image_id,),
        )
        return [row[0] for row in rows]

    def _container_dir(self, container_id: str) -> Path:
        if not CONTAINER_ID_PATTERN.fullmatch(container_id):
            raise InvalidArgument(
                f"invalid container ID {container_id!r}: expected letters, digits, '_', '.' "
                "or '-', starting with a letter or digit, at most 128 characters"
            )
        return self.directory / container_id
