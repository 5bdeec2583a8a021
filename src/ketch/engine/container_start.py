"""Container start and exit: create and start the container in the supervisor, record the
exits it reports, and bring the records up to date after ketchd (re)connects.

``ContainerStarts`` is mixed into ``ContainerService`` (engine/containers.py), which owns
the state used here.
"""

from __future__ import annotations

import logging
from typing import Any

from ketch.engine import rootfs_mounts, timestamps
from ketch.engine.hostconfig import create_bind_sources
from ketch.engine.interfaces import ImageSource, Supervisor
from ketch.engine.logopts import rotation
from ketch.engine.networking import ContainerNetworking
from ketch.engine.ports import PublishedPorts
from ketch.engine.store import Container, ContainerPaths, ContainerState, ContainerStore
from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound

logger = logging.getLogger(__name__)

# Docker's exit codes for a container whose process could not be started.
EXIT_COMMAND_NOT_FOUND = 127
EXIT_COMMAND_NOT_EXECUTABLE = 126
EXIT_START_FAILED = 128

BRIDGE_WARNING = (
    "bridge networking is not implemented yet: the container has only a loopback interface"
)


def is_command_not_found(message: str) -> bool:
    """Return whether a runtime's start error ``message`` reports a missing command."""
    lowered = message.lower()
    return "executable file not found" in lowered or "no such file or directory" in lowered


def start_failure_exit_code(message: str) -> int:
    """Return docker's exit code for a start that failed with ``message``."""
    if is_command_not_found(message):
        return EXIT_COMMAND_NOT_FOUND
    lowered = message.lower()
    if "permission denied" in lowered:
        return EXIT_COMMAND_NOT_EXECUTABLE
    return EXIT_START_FAILED


class ContainerStarts:
    """The start and exit steps of ``ContainerService``."""

    _store: ContainerStore
    _paths: ContainerPaths
    _images: ImageSource
    _supervisor: Supervisor
    _starting: set[str]
    _deferred_exits: dict[str, dict[str, Any]]
    networking: ContainerNetworking | None
    ports: PublishedPorts | None
    volumes: Any
    health: Any

    async def start(self, reference: str, by_policy: bool = False) -> bool:
        """Start a container; return False when it was already running (HTTP 304).

        A start by a user (not ``by_policy``) cancels a pending restart.
        """
        container = self.resolve(reference)
        if not by_policy:
            self.restarts.cancel(container)
        if container.state.removing:
            raise Conflict(f"cannot start container {container.id}: it is being removed")
        if container.running:
            return False
        if container.id in self._starting:
            raise Conflict(f"cannot start container {container.id}: it is already starting")
        self._starting.add(container.id)
        try:
            await self._start(container)
        finally:
            self._starting.discard(container.id)
            deferred = self._deferred_exits.pop(container.id, None)
            if deferred is not None:
                self.spawn(self.handle_exit(deferred))
        logger.info("started container %s (pid %d)", container.id, container.state.pid)
        self.emit(container, "start")
        if self.health is not None:
            self.health.watch(container)
        return True

    async def _start(self, container: Container) -> None:
        if container.state.status == "exited":
            await self._forget_in_supervisor(container.id)
        rootfs_mounts.ensure_mounted(self._images, container)
        bundle = self._paths.bundle(container.id)
        log_opts = container.host_config.get("LogConfig", {}).get("Config") or {}
        max_size, max_files = rotation(log_opts)
        try:
            create_bind_sources(container.host_config)
            if self.volumes is not None:
                self.volumes.mount_for_start(container.id)
            await self._connect_network(container)
            if self.ports is not None:
                await self.ports.publish(container)
            pid = await self._supervisor.create(
                container.id,
                bundle,
                self._paths.log(container.id),
                log_max_size=max_size,
                log_max_files=max_files,
                open_stdin=bool(container.config.get("OpenStdin")),
                tty=bool(container.config.get("Tty")),
            )
        except KetchError as error:
            await self._fail_start(container, error)
            raise self._start_error(error) from None

        await self.attachments.connect_pending(container.id)
        container.state = ContainerState(
            status="running", pid=pid, started_at=timestamps.now(), removing=False
        )
        self._store.save(container)
        try:
            await self._supervisor.start(container.id)
        except KetchError as error:
            container.state.status = "created"
            container.state.pid = 0
            await self._forget_in_supervisor(container.id)
            await self._fail_start(container, error)
            raise self._start_error(error) from None
        # Readers that attached while the supervisor's create was in flight.
        await self.attachments.connect_pending(container.id)

    async def _connect_network(self, container: Container) -> None:
        if self.networking is None:
            return
        await self.networking.connect_container(
            container, self._paths.hosts(container.id), self.find
        )

    def _start_error(self, error: KetchError) -> KetchError:
        # Docker responds with 400 for a command that cannot be found or executed, because the
        # request named it; other start failures keep their own class.
        if start_failure_exit_code(str(error)) != EXIT_START_FAILED:
            return InvalidArgument(str(error))
        return error

    async def _fail_start(self, container: Container, error: KetchError) -> None:
        logger.warning("failed to start container %s: %s", container.id, error)
        if self.ports is not None:
            self.ports.release(container.id)
        if self.networking is not None:
            self.networking.release_on_exit(container, self._paths.hosts, self.all)
        container.state.error = str(error)
        container.state.exit_code = start_failure_exit_code(str(error))
        self._store.save(container)
        self.attachments.end_pending(container.id)
        if container.auto_remove:
            await self._remove(container)

    async def _forget_in_supervisor(self, container_id: str) -> None:
        try:
            await self._supervisor.delete(container_id, force=True)
        except NotFound:
            pass

    async def handle_exit(self, event: dict[str, Any]) -> None:
        """Record an exit the supervisor reported; remove the container if AutoRemove is set."""
        container = self._store.get(str(event.get("id")))
        if container is None:
            return
        if container.id in self._starting:
            # start() is still between the supervisor's create and its own bookkeeping;
            # it applies the exit when it is done.
            self._deferred_exits[container.id] = event
            return
        if not container.running:
            return  # already recorded, for example by reconcile()
        exit_code = event.get("exit_code")
        self.record_exit(
            container,
            exit_code if isinstance(exit_code, int) else 255,
            event.get("finished_at") or timestamps.now(),
        )
        if container.auto_remove and not container.state.removing:
            await self._remove(container)

    def record_exit(
        self, container: Container, exit_code: int, finished_at: str, error: str = ""
    ) -> None:
        container.state.status = "exited"
        container.state.paused = False
        container.state.pid = 0
        container.state.exit_code = exit_code
        if self.ports is not None:
            self.ports.release(container.id)
        if self.networking is not None:
            self.networking.release_on_exit(container, self._paths.hosts, self.all)
        container.state.finished_at = finished_at
        if error:
            container.state.error = error
        self._store.save(container)
        logger.info("container %s exited with code %d", container.id, exit_code)
        self.emit(container, "die", exitCode=str(exit_code))
        if self.health is not None:
            self.health.forget(container.id)
        self.waiters.notify_stopped(container)
        self.restarts.on_exit(container)
        rootfs_mounts.unmount_stopped(container)

    async def reconcile(self) -> None:
        """Bring every record up to date with the supervisor, after ketchd (re)connects.

        Exits that happened while ketchd was away are recorded. A start that a crash of
        ketchd interrupted is undone, and removals that a crash interrupted, or
        auto-removals that never ran, are finished.
        """
        known = {state["id"]: state for state in await self._supervisor.list()}
        for container in self._store.all():
            if container.id in self._starting:
                continue
            state = known.get(container.id)
            if state is not None and state.get("status") == "created":
                await self._undo_interrupted_start(container)
            elif container.running:
                self._record_missed_exit(container, state)
            if not container.running and (
                container.state.removing
                or (container.auto_remove and container.state.status == "exited")
            ):
                self.spawn(self._remove(container))

    def _record_missed_exit(self, container: Container, state: dict[str, Any] | None) -> None:
        if state is None:
            self.record_exit(container, 255, timestamps.now(), "the supervisor has no record of it")
        elif state.get("status") == "stopped":
            exit_code = state.get("exit_code")
            self.record_exit(
                container,
                exit_code if isinstance(exit_code, int) else 255,
                state.get("finished_at") or timestamps.now(),
            )

    async def _undo_interrupted_start(self, container: Container) -> None:
        """Delete an init parked by a start that never finished, so a new start can work."""
        logger.warning("container %s was left half-started; deleting its init", container.id)
        await self._forget_in_supervisor(container.id)
        if container.running:
            container.state.status = "created"
            container.state.pid = 0
            container.state.error = "ketchd stopped while starting the container"
            self._store.save(container)
