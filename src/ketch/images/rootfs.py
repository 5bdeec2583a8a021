"""Container root filesystems: an overlayfs mount of an image's snapshots plus a writable
upper directory per container.

Layout::

    <root>/containers/<container id>/
        upper/     the container's writable layer (overlayfs upperdir)
        work/      overlayfs's scratch directory (workdir), on the same filesystem as upper
        merged/    the mount point, handed to the runtime as the bundle's rootfs
        empty/     an empty lower directory, only for an image without layers

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

from ketch.errors import InvalidArgument, SystemFailure
from ketch.images.metadata import transaction
from ketch.images.snapshots import Snapshotter
from ketch.linux import syscalls

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS image_rootfs (
    container_id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    created TEXT NOT NULL
)
"""

CONTAINER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# mount(2) copies at most one page of option data; 4096 bytes is the page size on x86-64
# and the usual one on arm64.
MAX_MOUNT_DATA = 4095


class RootfsManager:
    """Overlayfs mounts for containers under ``<root>/containers``."""

    def __init__(self, root: Path, db: sqlite3.Connection, snapshots: Snapshotter) -> None:
        # overlayfs splits its options at ',' and lowerdir at ':', so neither may appear
        # in the paths it is given.
        if "," in str(root) or ":" in str(root):
            raise InvalidArgument(f"image root {root} must not contain ',' or ':' (overlayfs)")
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

        lowerdirs = self.snapshots.lowerdirs(top_chain_id) if top_chain_id else []
        with transaction(self.db) as db:
            db.execute(
                "INSERT OR REPLACE INTO image_rootfs VALUES (?, ?, ?)",
                (container_id, image_id, datetime.now(UTC).isoformat()),
            )
        try:
            self._mount(container_dir, lowerdirs)
        except BaseException:
            self.release(container_id)
            raise
        log.info("mounted rootfs of container %s from image %s", container_id, image_id)
        return merged

    def release(self, container_id: str) -> None:
        """Unmount and delete the rootfs of ``container_id``. Does nothing when it is gone."""
        container_dir = self._container_dir(container_id)
        merged = container_dir / "merged"
        if os.path.ismount(merged):
            try:
                # MNT_DETACH: a process still inside (a container being torn down) keeps
                # the mount busy, and detaching lets the directory go regardless.
                syscalls.umount(merged, syscalls.MNT_DETACH | syscalls.UMOUNT_NOFOLLOW)
            except OSError as error:
                raise SystemFailure(f"cannot unmount the rootfs {merged}: {error}") from None
        if os.path.ismount(merged):
            # Deleting the tree now would delete the image's files through the mount.
            raise SystemFailure(f"the rootfs {merged} is still mounted after unmounting it")

        if container_dir.exists():
            shutil.rmtree(container_dir)
        with transaction(self.db) as db:
            db.execute("DELETE FROM image_rootfs WHERE container_id = ?", (container_id,))

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

    def _mount(self, container_dir: Path, lowerdirs: list[Path]) -> None:
        upper, work, merged = (container_dir / name for name in ("upper", "work", "merged"))
        for directory in (upper, work, merged):
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        if not lowerdirs:
            empty = container_dir / "empty"
            empty.mkdir(exist_ok=True, mode=0o755)
            lowerdirs = [empty]

        options = (
            f"lowerdir={':'.join(str(path) for path in lowerdirs)},upperdir={upper},workdir={work}"
        )
        if len(options) > MAX_MOUNT_DATA:
            # Limitation: deep images with long data-root paths exceed one page of mount
            # options; dockerd shortens the paths with symlinks, ketch does not yet.
            raise SystemFailure(
                f"cannot mount the rootfs {merged}: {len(lowerdirs)} layers make "
                f"{len(options)} bytes of overlayfs options, more than {MAX_MOUNT_DATA}"
            )
        try:
            syscalls.mount("overlay", merged, "overlay", 0, options)
        except OSError as error:
            raise SystemFailure(f"cannot mount overlayfs at {merged}: {error}") from None
