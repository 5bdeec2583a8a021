"""Container lifecycle: create, start, kill, stop, remove, wait and attach, and the exits
the supervisor reports.

A container's life, as the engine drives it::

    create   check the body, resolve the image locally, mount its rootfs (overlayfs),
             write bundle/config.json, insert the row                 -> "created"
    start    supervisor create (init parked), connect pending attach
             streams, supervisor start                                -> "running"
    exit     reported on the supervisor's event stream; the row gets
             ExitCode and FinishedAt, waiters are resolved            -> "exited"
    remove   supervisor delete, release the rootfs, delete the
             directory and the row; "removed" waiters are resolved    -> gone

With ``HostConfig.AutoRemove`` the engine removes the container itself once its exit is
recorded. A failed create leaves nothing behind; a failed start leaves the container as
it was, with ``State.Error`` set, as docker does.

The steps live in mixins that ``ContainerService`` combines: ``container_create``,
``container_start`` (start and exits), ``container_stop`` (kill and stop) and
``container_removal``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

from ketch.engine.attach import AttachHub, AttachReader, log_frames
from ketch.engine.container_create import BRIDGE_WARNING, ContainerCreation
from ketch.engine.container_removal import ContainerRemoval
from ketch.engine.container_start import ContainerStarts
from ketch.engine.container_stop import ContainerStops
from ketch.engine.events import EventBus
from ketch.engine.interfaces import ImageSource, Supervisor
from ketch.engine.logopts import DEFAULT_LOG_OPTS
from ketch.engine.networking import ContainerNetworking
from ketch.engine.ports import PublishedPorts
from ketch.engine.resolvconf import ResolvConfRenderer
from ketch.engine.restarts import RestartPolicies
from ketch.engine.store import Container, ContainerPaths, ContainerStore
from ketch.engine.waits import Waiters, check_condition
from ketch.errors import InvalidArgument, NotFound

__all__ = ["BRIDGE_WARNING", "ContainerService", "ImageSource", "Supervisor"]

logger = logging.getLogger(__name__)


class ContainerService(ContainerCreation, ContainerStarts, ContainerStops, ContainerRemoval):
    """Every container of one engine. Used from the event loop only."""

    def __init__(
        self,
        store: ContainerStore,
        paths: ContainerPaths,
        images: ImageSource,
        supervisor: Supervisor,
        default_log_opts: dict[str, str] | None = None,
        events: EventBus | None = None,
    ) -> None:
        self._store = store
        self.events = events or EventBus()
        self._paths = paths
        self._images = images
        self._supervisor = supervisor
        self._default_log_opts = dict(
            DEFAULT_LOG_OPTS if default_log_opts is None else default_log_opts
        )
        self.waiters = Waiters()
        self.attachments = AttachHub(supervisor)
        self.restarts = RestartPolicies(self)
        self.health: Any = None  # a HealthMonitor, set by the Engine
        # daemon.json's "init" and "init-path": whether containers get an init by default,
        # and the binary (None: docker-init or tini-static in PATH).
        self.default_init = False
        # daemon.json's "default-ulimits", already lowered to the host's hard limits.
        self.default_ulimits: list[dict[str, Any]] = []
        self.init_path: str | None = None
        # Bridge endpoints; None (as in unit tests) leaves bridge containers loopback only.
        self.networking: ContainerNetworking | None = None
        # Published ports, set by the Engine; None publishes no ports.
        self.ports: PublishedPorts | None = None
        # A volume_mounts.ContainerVolumes, set by the Engine; None leaves volumes unresolved.
        self.volumes: Any = None
        # Renders the /etc/resolv.conf of new containers; ketchd gives it its DNS settings.
        self.resolv_conf = ResolvConfRenderer()
        self._reserved_names: set[str] = set()
        self._starting: set[str] = set()
        self._deferred_exits: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # Lookup

    def resolve(self, reference: str) -> Container:
        """Find a container by full id, name (with or without "/") or unique id prefix."""
        container = self._store.get(reference)
        if container is not None:
            return container
        if reference:
            container = self._store.by_name(
                reference if reference.startswith("/") else "/" + reference
            )
            if container is not None:
                return container
        matches = [c for c in self._store.all() if reference and c.id.startswith(reference)]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {reference}")
        if not matches:
            raise NotFound(f"No such container: {reference}")
        return matches[0]

    def all(self) -> list[Container]:
        return self._store.all()

    def find(self, container_id: str) -> Container | None:
        """Return the container with exactly this id, or None."""
        return self._store.get(container_id)

    def save(self, container: Container) -> None:
        self._store.save(container)

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    def name_reserved(self, name: str) -> bool:
        """Return whether a create in progress has claimed ``name``."""
        return name in self._reserved_names

    def emit(self, container: Container, action: str, **values: str) -> None:
        """Publish a container event with docker's attributes: labels, name and image."""
        attributes = dict(container.config.get("Labels") or {})
        attributes["name"] = container.name.lstrip("/")
        attributes["image"] = container.config.get("Image", "")
        attributes.update(values)
        self.events.publish("container", action, container.id, attributes)

    def log_path(self, container_id: str) -> Path:
        return self._paths.log(container_id)

    # Wait and attach

    def wait(
        self, reference: str, condition: str | None = "not-running"
    ) -> Awaitable[dict[str, Any]]:
        """Register a waiter now and return the awaitable that gives the wait body."""
        checked = check_condition(condition)
        container = self.resolve(reference)
        return self.waiters.register(container, checked)

    async def attach(
        self,
        reference: str,
        stdout: bool,
        stderr: bool,
        stream: bool,
        logs: bool,
        stdin: bool = False,
    ) -> AttachReader:
        container = self.resolve(reference)
        if stdin and not container.config.get("OpenStdin"):
            stdin = False  # dockerd attaches no stdin to a container created without -i
        tty = bool(container.config.get("Tty"))
        replay = log_frames(self._paths.log(container.id), stdout, stderr) if logs else []
        reader, attachment = self.attachments.open(
            container.id,
            stdout=stdout,
            stderr=stderr,
            replay=replay,
            raw=tty,
            stdin=stdin,
            close_stdin=bool(container.config.get("StdinOnce")) and not tty,
        )
        if not stream:
            reader.feed_eof()
        elif container.running and container.id not in self._starting:
            try:
                await self.attachments.connect(container.id, attachment)
            except NotFound:
                reader.feed_eof()  # it exited meanwhile
        else:
            self.attachments.add_pending(container.id, attachment)
        return reader

    # Background tasks

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` in the background, logging its failure."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background container task failed", exc_info=task.exception())

    async def close(self) -> None:
        """Cancel background tasks; containers keep running in the supervisor."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
