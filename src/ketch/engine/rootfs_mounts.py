"""The overlayfs mount of a container's rootfs while the container does not run.

A container's rootfs is mounted at create, so that ``run`` pays for one mount. Once the
container exits, its ``merged`` mount is detached: a host with many stopped containers
would otherwise keep one overlayfs mount per container in its mount table. The writable
layer (``upper`` and ``work`` beside ``merged``) stays, so nothing the container wrote is
lost. The mount is made again, from the same directories, when the container starts
and when an operation reads its files (``docker cp``, export).

A copied rootfs (the copying snapshotter) is a plain directory, never a mount point, so
both steps leave it alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ketch.engine.store import Container
from ketch.errors import KetchError
from ketch.images.snapshots import unmount_path

logger = logging.getLogger(__name__)


def unmount_stopped(container: Container) -> None:
    """Detach the rootfs mount of a container that has exited. A failure is logged, not
    raised, because the container's exit is recorded regardless."""
    try:
        unmount_path(Path(container.rootfs))
    except KetchError as error:
        logger.warning("failed to unmount the rootfs of container %s: %s", container.id, error)
        return
    logger.debug("unmounted the rootfs of stopped container %s", container.id)


def ensure_mounted(images: Any, container: Container) -> None:
    """Mount the rootfs of ``container`` again if it was unmounted at its exit.

    Raises the image store's error when the mount fails, because a start or a copy on an
    unmounted rootfs would see an empty directory.
    """
    merged = Path(container.rootfs)
    if not _unmounted_overlay(merged):
        return
    # NOTE: a rootfs mounted again for a copy or an export stays mounted until the
    # container's next exit, because nothing tracks when the copy is done with it.
    image = images.get(container.image_id)
    images.prepare_rootfs(container.id, image)
    logger.debug("mounted the rootfs of container %s again", container.id)


def _unmounted_overlay(merged: Path) -> bool:
    # overlayfs keeps the writable layer in "upper" beside "merged". A copied rootfs has none.
    return (merged.parent / "upper").is_dir() and not merged.is_mount()
