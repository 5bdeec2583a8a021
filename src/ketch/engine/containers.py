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
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

from ketch.engine import rootfs_mounts, timestamps
from ketch.engine.attach import AttachHub, AttachReader, log_frames
from ketch.engine.bundles import write_bundle
from ketch.engine.events import EventBus
from ketch.engine.interfaces import ImageSource, Supervisor
from ketch.engine.logopts import DEFAULT_LOG_OPTS, rotation
from ketch.engine.names import generate_id, generate_name, normalize_name
from ketch.engine.networking import BRIDGE_MODES, ContainerNetworking
from ketch.engine.options import CreateOptions, parse_create_body, parse_signal
from ketch.engine.ports import PublishedPorts
from ketch.engine.resolvconf import ResolvConfRenderer
from ketch.engine.restarts import RestartPolicies
from ketch.engine.spec import (
    DEFAULT_STOP_SIGNAL,
    DEFAULT_STOP_TIMEOUT,
    find_init_binary,
    merge_config,
)
from ketch.engine.store import Container, ContainerPaths, ContainerState, ContainerStore
from ketch.engine.views import host_config_view
from ketch.engine.waits import Waiters, check_condition
from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound, SystemFailure
from ketch.network.ports import check_network_mode

logger = logging.getLogger(__name__)

# How long remove --force and kill wait for an exit after SIGKILL before giving up.
KILL_WAIT_SECONDS = 30.0

# Docker's exit codes for a container whose process could not be started.
EXIT_COMMAND_NOT_FOUND = 127
EXIT_COMMAND_NOT_EXECUTABLE = 126
EXIT_START_FAILED = 128

BRIDGE_WARNING = (
    "bridge networking is not implemented yet: the container has only a loopback interface"
)


def start_failure_exit_code(message: str) -> int:
    """Return docker's exit code for a start that failed with ``message``."""
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return EXIT_COMMAND_NOT_FOUND
    if "permission denied" in lowered:
        return EXIT_COMMAND_NOT_EXECUTABLE
    return EXIT_START_FAILED


class ContainerService:
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

    # Create

    async def create(self, body: Any, name: str | None) -> dict[str, Any]:
        """Create a container from a create body; return ``{"Id", "Warnings"}``."""
        options = parse_create_body(body)
        port_warnings = check_network_mode(
            options.network_mode, options.raw_host_config, options.exposed_ports
        )
        planned = {}
        if self.networking is not None:
            planned = await self.networking.plan(options, body, self.resolve)
        if not options.log_opts:
            options.log_opts = dict(self._default_log_opts)
        stored_name = self._claim_name(name)
        try:
            image = self._images.get(options.image)
            container_id = generate_id(self._store.ids())
            hostname = options.hostname or container_id[:12]
            config = merge_config(options, dict(image.config or {}), hostname)
            container = self._materialize(container_id, stored_name, image, options, config)
            if self.volumes is not None:
                await self.volumes.populate(container, self._remove)
        finally:
            self._reserved_names.discard(stored_name)
        if planned:
            container.network_endpoints = planned
            self._store.save(container)
        warnings = list(port_warnings)
        if self.networking is None and options.network_mode in BRIDGE_MODES:
            warnings.append(BRIDGE_WARNING)
        self.emit(container, "create")
        logger.info("created container %s (%s) from %s", container.id, stored_name, options.image)
        return {"Id": container.id, "Warnings": warnings}

    def _claim_name(self, name: str | None) -> str:
        names_in_use = self._store.names() | self._reserved_names
        stored_name = normalize_name(name) if name else generate_name(names_in_use)
        owner = self._store.by_name(stored_name)
        if owner is not None or stored_name in self._reserved_names:
            owner_id = owner.id if owner is not None else "(being created)"
            raise Conflict(
                f'Conflict. The container name "{stored_name}" is already in use by container '
                f'"{owner_id}". You have to remove (or rename) that container to be able to '
                "reuse that name."
            )
        self._reserved_names.add(stored_name)
        return stored_name

    def _materialize(
        self,
        container_id: str,
        name: str,
        image: Any,
        options: CreateOptions,
        config: dict[str, Any],
    ) -> Container:
        """Make the container's rootfs, files and row, or leave nothing if any step fails."""
        directory = self._paths.directory(container_id)
        directory.mkdir(parents=True, mode=0o710)
        try:
            rootfs = Path(self._images.prepare_rootfs(container_id, image))
            if not options.host.ulimits:
                options.host.ulimits = list(self.default_ulimits)
            wants_init = options.init if options.init is not None else self.default_init
            init_binary = find_init_binary(self.init_path) if wants_init else None
            if self.networking is not None:
                namespace = self.networking.namespace_path(container_id, options.network_mode)
                options.network_namespace = str(namespace) if namespace else None
            if self.volumes is not None:
                self.volumes.attach(container_id, options, config, rootfs, self.resolve)
            write_bundle(
                self._paths, container_id, config, options, rootfs, init_binary, self.resolv_conf
            )
            container = Container(
                id=container_id,
                name=name,
                created=timestamps.now(),
                image_id=image.id,
                config=config,
                host_config=host_config_view(options),
                rootfs=str(rootfs),
            )
            self._store.add(container)
            return container
        except BaseException:
            if self.volumes is not None:
                self.volumes.detach(container_id, remove_anonymous=True)
            self._release_rootfs(container_id)
            shutil.rmtree(directory, ignore_errors=True)
            raise

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
            logger.error("cannot release the rootfs of container %s: %s", container_id, error)

    # Start

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
        logger.warning("cannot start container %s: %s", container.id, error)
        if self.ports is not None:
            self.ports.release(container.id)
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

    # Exits

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

    # Kill, stop, remove

    async def kill(self, reference: str, signal_value: str | int = "SIGKILL") -> None:
        container = self.resolve(reference)
        # Docker reads an empty signal parameter as the default, SIGKILL.
        number = parse_signal(signal_value or "SIGKILL", "signal")
        if container.state.restarting:
            raise Conflict(
                f"Container {container.id} is restarting, wait until the container is running"
            )
        if not container.running:
            raise Conflict(
                f"Cannot kill container: {reference}: Container {container.id} is not running"
            )
        container.state.manually_stopped = True
        self._store.save(container)
        self.emit(container, "kill", signal=str(number))
        if number == signal.SIGKILL:
            await self._kill_and_wait(container, number, KILL_WAIT_SECONDS)
            return
        await self._supervisor.kill(container.id, number)

    async def stop(
        self, reference: str, timeout: int | None = None, signal_name: str | None = None
    ) -> bool:
        """Stop a container with ``signal_name`` or its StopSignal, then SIGKILL after the
        timeout.

        Returns False when it was not running (HTTP 304). A negative timeout waits for
        the exit without a SIGKILL.
        """
        container = self.resolve(reference)
        if container.state.restarting:
            self.restarts.cancel(container)
            container.state.manually_stopped = True
            self._store.save(container)
            return True
        if not container.running:
            return False
        container.state.manually_stopped = True
        self._store.save(container)
        stop_signal = parse_signal(
            signal_name or container.config.get("StopSignal") or DEFAULT_STOP_SIGNAL,
            "signal" if signal_name else "StopSignal",
        )
        if timeout is None:
            timeout = container.config.get("StopTimeout")
        if timeout is None:
            timeout = DEFAULT_STOP_TIMEOUT
        stopped = self.waiters.register(container, "not-running")
        self.emit(container, "kill", signal=str(stop_signal))
        await self._signal(container, stop_signal)
        try:
            await asyncio.wait_for(asyncio.shield(stopped), None if timeout < 0 else timeout)
        except TimeoutError:
            logger.info(
                "container %s did not exit %d s after signal %d; sending SIGKILL",
                container.id,
                timeout,
                stop_signal,
            )
            self.emit(container, "kill", signal=str(int(signal.SIGKILL)))
            await self._kill_and_wait(container, signal.SIGKILL, KILL_WAIT_SECONDS)
        self.emit(container, "stop")
        return True

    async def _signal(self, container: Container, number: int) -> None:
        try:
            await self._supervisor.kill(container.id, number)
        except (NotFound, Conflict) as error:
            # The process exited meanwhile; its exit event is on its way.
            logger.debug("signal %d to container %s: %s", number, container.id, error)
            return
        if container.state.paused:
            # A frozen process handles no signal, so the container is thawed to let it act,
            # as dockerd does for stop and kill of a paused container.
            await self.resume_paused(container)

    async def resume_paused(self, container: Container) -> None:
        """Thaw a paused container and record it as running again."""
        try:
            await self._supervisor.resume(container.id)
        except Conflict as error:
            logger.debug("resume of container %s: %s", container.id, error)
        container.state.paused = False
        self._store.save(container)

    async def _kill_and_wait(self, container: Container, number: int, timeout: float) -> None:
        stopped = self.waiters.register(container, "not-running")
        await self._signal(container, number)
        try:
            await asyncio.wait_for(asyncio.shield(stopped), timeout)
        except TimeoutError:
            raise SystemFailure(
                f"container {container.id} did not exit within {timeout:g} s of signal {number}"
            ) from None

    async def remove(self, reference: str, force: bool = False, volumes: bool = False) -> None:
        """Remove a container; ``volumes`` removes its anonymous volumes too (rm -v)."""
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
