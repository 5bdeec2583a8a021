"""Container removal: delete what a container owns (supervisor record, ports, endpoints,
rootfs, directory, row, anonymous volumes), and what an unfinished create left behind.

``ContainerRemoval`` is mixed into ``ContainerService`` (engine/containers.py), which owns
the state used here.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from typing import Any

from ketch.engine.container_stop import KILL_WAIT_SECONDS
from ketch.engine.interfaces import ImageSource
from ketch.engine.networking import ContainerNetworking
from ketch.engine.ports import PublishedPorts
from ketch.engine.store import Container, ContainerPaths, ContainerStore
from ketch.errors import Conflict, KetchError

logger = logging.getLogger(__name__)


class ContainerRemoval:
    """The remove step of ``ContainerService``."""

    _store: ContainerStore
    _paths: ContainerPaths
    _images: ImageSource
    _starting: set[str]
    networking: ContainerNetworking | None
    ports: PublishedPorts | None
    volumes: Any

    async def remove(self, reference: str, force: bool = False, volumes: bool = False) -> None:
        """Remove a container, and its anonymous volumes too if ``volumes`` is set (rm -v)."""
        container = self.resolve(reference)
        if container.state.removing:
            raise Conflict(f"removal of container {container.id} is already in progress")
        if container.id in self._starting:
            raise Conflict(f"cannot remove container {container.id}: it is starting")
        if container.running and not force:
            raise Conflict(
                f"You cannot remove a running container {container.id}. Stop the container "
                "before attempting removal or force remove"
            )
        await self._remove(container, volumes)

    async def _remove(self, container: Container, volumes: bool = False) -> None:
        """Kill if needed, then delete everything the container owns.

        Anonymous volumes go with ``volumes`` or AutoRemove, as dockerd removes them.
        """
        if self._store.get(container.id) is None:
            return  # removed meanwhile by another request
        self.restarts.cancel(container)
        container.state.removing = True
        self._store.save(container)
        try:
            if container.running:
                await self._kill_and_wait(container, signal.SIGKILL, KILL_WAIT_SECONDS)
            await self._forget_in_supervisor(container.id)
        except KetchError:
            container.state.removing = False
            self._store.save(container)
            raise
        if self.ports is not None:
            self.ports.release(container.id)
        if self.networking is not None:
            await self.networking.disconnect(container.id)
        self._release_rootfs(container.id)
        shutil.rmtree(self._paths.directory(container.id), ignore_errors=True)
        self._store.remove(container.id)
        if self.volumes is not None:
            self.volumes.detach(container.id, remove_anonymous=volumes or container.auto_remove)
        self.attachments.close(container.id)
        self.waiters.notify_removed(container)
        self.emit(container, "destroy")
        logger.info("removed container %s", container.id)

    def remove_orphans(self) -> None:
        """Delete what a create that ketchd did not finish left behind.

        A create inserts the container's row last, so a container directory without a row
        belongs to a create that a crash interrupted: the container never existed for any
        client. Call only before serving requests, when no create is in progress.
        """
        try:
            names = os.listdir(self._paths.root)
        except FileNotFoundError:
            return
        for name in names:
            if self._store.get(name) is not None or name.startswith("."):
                continue
            logger.warning("removing %s: left by a create that did not finish", name)
            self._release_rootfs(name)
            shutil.rmtree(self._paths.directory(name), ignore_errors=True)

    def _release_rootfs(self, container_id: str) -> None:
        try:
            self._images.release_rootfs(container_id)
        except (KetchError, OSError) as error:
            logger.error("failed to release the rootfs of container %s: %s", container_id, error)
