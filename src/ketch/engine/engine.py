"""The Engine: what the Engine API server calls, one method per operation.

It ties the container service to the image store and the supervisor. One background task
follows the supervisor's event stream and records exits as they are reported. After every
(re)connection it reconciles the records with the supervisor's list, so exits that
happened while ketchd was down or disconnected are not lost. Container references are a
full id, a unique id prefix or a name (with or without the leading "/").
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from ketch.engine import rootfs_mounts, views
from ketch.engine.containers import ContainerService, ImageSource, Supervisor
from ketch.engine.control import ContainerControl, writable_layer_size
from ketch.engine.events import EventBus
from ketch.engine.execs import ExecService, ExecSession
from ketch.engine.filters import select_containers
from ketch.engine.health import HealthMonitor
from ketch.engine.images import ImageOperations
from ketch.engine.layer_usage import LayerUsage, summarize_layers
from ketch.engine.ports import PublishedPorts
from ketch.engine.restarts import wants_start_at_boot
from ketch.engine.store import Container, ContainerPaths, ContainerStore
from ketch.engine.volume_mounts import ContainerVolumes
from ketch.engine.volumes import VolumeService
from ketch.errors import Conflict, KetchError

if TYPE_CHECKING:
    from ketch.engine.logs import LogQuery
    from ketch.engine.networks import NetworkOperations
    from ketch.images.auth import Credentials

logger = logging.getLogger(__name__)

# Pause between attempts to reach a supervisor that went away.
RECONNECT_DELAY_SECONDS = 1.0

# How long start() waits for the first subscription and reconciliation.
CONNECT_TIMEOUT_SECONDS = 15.0


class ImageStoreLike(ImageSource, Protocol):
    """The part of ketch.images.ImageStore that the engine uses."""

    async def pull(
        self,
        reference: str,
        progress: Callable[[dict[str, Any]], None] | None = None,
        auth: Credentials | None = None,
    ) -> Any: ...
    def list(self) -> list[Any]: ...


class EventSupervisor(Supervisor, Protocol):
    async def subscribe(self) -> Any: ...
    async def resize(self, target_id: str, height: int, width: int) -> None: ...
    async def processes(self, container_id: str) -> list[int]: ...


class Engine:
    """The container engine behind ketchd's API."""

    def __init__(
        self,
        *,
        data_root: Path,
        db: Any,
        images: ImageStoreLike,
        supervisor: EventSupervisor,
        ensure_supervisor: Callable[[], Awaitable[None]] | None = None,
        registry_mirrors: list[str] | None = None,
        insecure_registries: list[str] | None = None,
        debug: bool = False,
        default_log_opts: dict[str, str] | None = None,
    ) -> None:
        self.data_root = data_root
        self.images = images
        self.supervisor = supervisor
        self.paths = ContainerPaths(data_root)
        self.store = ContainerStore(db)
        self.events = EventBus()
        self.containers = ContainerService(
            self.store, self.paths, images, supervisor, default_log_opts, self.events
        )
        self.ports = PublishedPorts(db)
        self.containers.ports = self.ports
        self.volumes = VolumeService(data_root, db)
        self.volumes.container_exists = self.store.get
        self.volumes.events = self.events
        self.containers.volumes = ContainerVolumes(self.volumes)
        self.control = ContainerControl(self.containers, self.store, self.paths)
        self.execs = ExecService(self.containers, self.paths)
        self.health = HealthMonitor(self.containers, self.execs)
        self.containers.health = self.health
        self.image_operations = ImageOperations(
            images, self.containers.all, self.containers.resolve, self.events
        )
        self._ensure_supervisor = ensure_supervisor
        self._mirrors = list(registry_mirrors or [])
        self._insecure_registries = list(insecure_registries or [])
        self._debug = debug
        self._watcher: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    @functools.cached_property
    def networks(self) -> NetworkOperations:
        """The handler of network requests, built at the first one so ketchd starts without it."""
        from ketch.engine.networks import NetworkOperations

        return NetworkOperations(self.containers, self.paths)

    # Lifetime

    async def start(self, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
        """Subscribe to the supervisor's events and reconcile.

        Returns once both are done, or after ``timeout`` with a warning, in which case the
        background task keeps trying and container operations fail as Unavailable.
        """
        self.containers.remove_orphans()
        self.containers.volumes.forget_missing(self.store.ids())
        self._watcher = asyncio.create_task(self._watch_supervisor())
        connected = asyncio.create_task(self._connected.wait())
        done, _ = await asyncio.wait(
            {connected, self._watcher}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        if connected not in done:
            connected.cancel()
        if self._watcher in done:
            self._watcher.result()
        elif not done:
            logger.warning("the supervisor did not respond within %g s; still trying", timeout)
        await self.ports.restore(self.containers.all())

    async def close(self) -> None:
        """Stop following events and background work; containers keep running."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.health.close()
        await self.containers.close()
        self.ports.close()

    async def _watch_supervisor(self) -> None:
        while True:
            try:
                stream = await self.supervisor.subscribe()
                try:
                    await self.containers.reconcile()
                    await self.execs.reconcile()
                    if not self._connected.is_set():
                        self._start_by_policy_at_boot()
                        for container in self.containers.all():
                            if container.running:
                                self.health.watch(container)
                    self._connected.set()
                    async for event in stream:
                        if event.get("type") == "exit":
                            self.containers.spawn(self.containers.handle_exit(event))
                        elif event.get("type") == "exec_exit":
                            self.execs.handle_exit(event)
                finally:
                    stream.close()
                logger.warning("the supervisor closed its event stream; reconnecting")
            except KetchError as error:
                logger.warning("cannot follow the supervisor's events: %s", error)
            except OSError as error:
                logger.warning("cannot follow the supervisor's events: %s", error)
            await asyncio.sleep(RECONNECT_DELAY_SECONDS)
            if self._ensure_supervisor is not None:
                try:
                    await self._ensure_supervisor()
                except KetchError as error:
                    logger.error("cannot start the supervisor: %s", error)

    def _start_by_policy_at_boot(self) -> None:
        """Start the stopped containers whose restart policy is always or unless-stopped."""
        for container in self.containers.all():
            if container.state.status != "exited" or container.state.restarting:
                continue
            if wants_start_at_boot(container):
                logger.info("starting container %s for its restart policy", container.id)
                self.containers.spawn(self._start_quietly(container.id))

    async def _start_quietly(self, container_id: str) -> None:
        try:
            await self.containers.start(container_id)
        except KetchError as error:
            logger.warning("cannot start container %s: %s", container_id, error)

    # System

    def version(self) -> dict[str, Any]:
        return views.version_view()

    def info(self) -> dict[str, Any]:
        warnings = []
        if not self._connected.is_set():
            warnings.append("WARNING: the supervisor is not connected")
        return views.info_view(
            engine_id=self.store.engine_id(),
            containers=self.containers.all(),
            image_count=len(self.images.list()),
            data_root=self.data_root,
            debug=self._debug,
            mirrors=self._mirrors,
            insecure_registries=self._insecure_registries,
            warnings=warnings,
            events_listeners=self.events.listener_count,
        )

    # Images

    async def pull_image(
        self,
        reference: str,
        progress: Callable[[dict[str, Any]], None] | None = None,
        auth: Credentials | None = None,
    ) -> None:
        """Pull ``reference`` with ``auth``, the request's credentials (X-Registry-Auth).

        Without ``auth`` the image store uses the credentials stored for the registry.
        """
        await self.images.pull(reference, progress, auth=auth)
        self.events.publish("image", "pull", reference, {"name": reference})

    def list_images(self, shared_size: bool = False) -> list[dict[str, Any]]:
        """Return ``GET /images/json``, with each ``SharedSize`` set if ``shared_size`` is."""
        counts: dict[str, int] = {}
        for container in self.containers.all():
            counts[container.image_id] = counts.get(container.image_id, 0) + 1
        summaries = [
            views.image_summary(image, counts.get(image.id, 0)) for image in self.images.list()
        ]
        if shared_size:
            self._fill_shared_sizes(summaries)
        return summaries

    def _fill_shared_sizes(self, summaries: list[dict[str, Any]]) -> LayerUsage:
        """Set each summary's ``SharedSize`` and return the layer totals over all of them."""
        usage = summarize_layers(
            {
                summary["Id"]: self.image_operations.layer_sizes(summary["Id"])
                for summary in summaries
            }
        )
        for summary in summaries:
            summary["SharedSize"] = usage.shared_sizes[summary["Id"]]
        return usage

    def inspect_image(self, name: str) -> dict[str, Any]:
        return views.inspect_image(self.images.get(name))

    # Containers

    async def create_container(self, body: Any, name: str | None = None) -> dict[str, Any]:
        return await self.containers.create(body, name)

    async def start_container(self, ref: str) -> bool:
        """Start the container; False means it was already running (HTTP 304)."""
        return await self.containers.start(ref)

    def inspect_container(self, ref: str) -> dict[str, Any]:
        container = self.containers.resolve(ref)
        view = views.inspect_container(container, self.paths)
        view["ExecIDs"] = self.execs.ids_of(container.id) or None
        view["Mounts"] += self.containers.volumes.mount_points(container.id)
        view["NetworkSettings"]["Ports"] = self.ports.port_map(container)
        return view

    def list_containers(
        self,
        all: bool = False,
        limit: int = -1,
        filters: dict[str, list[str]] | None = None,
        size: bool = False,
    ) -> list[dict[str, Any]]:
        """Return ``GET /containers/json``; with ``size``, SizeRw and SizeRootFs too."""
        volume_filter = (filters or {}).get("volume")
        if volume_filter:
            filters = {key: values for key, values in (filters or {}).items() if key != "volume"}
            # A limit lists stopped containers too, which must hold when the limit moves below.
            all, limit, volume_limit = all or limit > 0, -1, limit
        selected = select_containers(self.containers.all(), all, limit, filters)
        if volume_filter:
            selected = self.containers.volumes.select(selected, volume_filter, volume_limit)
        summaries = [views.container_summary(container) for container in selected]
        for summary in summaries:
            summary["Mounts"] += self.containers.volumes.mount_points(summary["Id"])
        for summary, container in zip(summaries, selected, strict=True):
            summary["Ports"] = self.ports.summary_ports(container)
        if size:
            image_sizes = {image.id: image.size for image in self.images.list()}
            for summary, container in zip(summaries, selected, strict=True):
                summary["SizeRw"] = writable_layer_size(container.rootfs)
                summary["SizeRootFs"] = summary["SizeRw"] + image_sizes.get(container.image_id, 0)
        return summaries

    async def remove_container(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        await self.containers.remove(ref, force, volumes)

    async def kill_container(self, ref: str, signal: str | int = "SIGKILL") -> None:
        await self.containers.kill(ref, signal)

    async def stop_container(
        self, ref: str, timeout: int | None = None, signal: str | None = None
    ) -> bool:
        """Stop the container; False means it was not running (HTTP 304)."""
        return await self.containers.stop(ref, timeout, signal)

    async def restart_container(
        self, ref: str, timeout: int | None = None, signal: str | None = None
    ) -> None:
        await self.control.restart(ref, timeout, signal)

    async def pause_container(self, ref: str) -> None:
        await self.control.pause(ref)

    async def unpause_container(self, ref: str) -> None:
        await self.control.unpause(ref)

    def rename_container(self, ref: str, name: str) -> None:
        self.control.rename(ref, name)

    async def update_container(self, ref: str, body: Any) -> dict[str, Any]:
        return await self.control.update(ref, body)

    async def prune_containers(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        return await self.control.prune(filters)

    # Exec

    def create_exec(self, ref: str, body: Any) -> dict[str, str]:
        return self.execs.create(ref, body)

    async def start_exec(
        self, exec_id: str, detach: bool = False, tty: bool | None = None
    ) -> ExecSession | None:
        """Start the exec; None when detached, else the session to stream to the client."""
        session = await self.execs.start(exec_id, detach, tty)
        if not detach:
            return session
        self.containers.spawn(_drain(session.output))
        return None

    def check_exec_start(self, exec_id: str) -> None:
        """Raise what starting the exec would raise now (unknown exec, container stopped)."""
        self.execs.check_start(exec_id)

    def inspect_exec(self, exec_id: str) -> dict[str, Any]:
        return self.execs.inspect(exec_id)

    async def resize_exec(self, exec_id: str, height: int, width: int) -> None:
        await self.execs.resize(exec_id, height, width)

    async def resize_container(self, ref: str, height: int, width: int) -> None:
        container = self.containers.resolve(ref)
        if not container.running:
            raise Conflict(f"Container {container.id} is not running")
        await self.supervisor.resize(container.id, height, width)

    # Archives. Each request imports ketch.engine.archive itself, so that ketchd's start and
    # the create and start of containers leave it out of memory.

    def _container_root(self, ref: str) -> tuple[Container, int]:
        from ketch.engine import archive

        container = self.containers.resolve(ref)
        pid = container.state.pid if container.running else 0
        if not pid:
            rootfs_mounts.ensure_mounted(self.images, container)
        return container, archive.open_root(pid, container.rootfs)

    async def archive_stat(self, ref: str, path: str) -> dict[str, Any]:
        """Return the stat object of ``path`` in the container (HEAD archive)."""
        from ketch.engine import archive

        container, root_fd = self._container_root(ref)
        try:
            return archive.path_stat(root_fd, path, container.id)
        finally:
            os.close(root_fd)

    async def archive_get(self, ref: str, path: str) -> tuple[dict[str, Any], Any]:
        """Return the stat of ``path`` and a rewound file holding its tar."""
        from ketch.engine import archive

        container, root_fd = self._container_root(ref)
        try:
            stat_object = archive.path_stat(root_fd, path, container.id)
            spool = await asyncio.to_thread(
                archive.tar_to_spool, root_fd, path, container.id, self.data_root
            )
        finally:
            os.close(root_fd)
        return stat_object, spool

    async def archive_put(
        self, ref: str, path: str, data: bytes | IO[bytes], keep_owners: bool
    ) -> None:
        """Extract a tar (bytes or a binary file) into directory ``path`` of the container."""
        from ketch.engine import archive

        container, root_fd = self._container_root(ref)
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        try:
            await asyncio.to_thread(
                archive.extract_tar, root_fd, path, stream, container.id, keep_owners
            )
        finally:
            os.close(root_fd)

    async def export_container(self, ref: str) -> Any:
        """Return a rewound file holding the tar of the container's rootfs tree."""
        from ketch.engine import archive

        container = self.containers.resolve(ref)
        rootfs_mounts.ensure_mounted(self.images, container)
        return await asyncio.to_thread(archive.export_to_spool, container.rootfs, self.data_root)

    # Stats and processes. ketch.engine.stats is imported at the first request.

    def container_stats(
        self, ref: str, stream: bool = True, one_shot: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Return the container's stats objects; the container is resolved now."""
        from ketch.engine import stats

        container = self.containers.resolve(ref)
        return stats.stream_samples(container, stream, one_shot)

    async def container_top(self, ref: str, ps_args: str = "") -> dict[str, Any]:
        from ketch.engine import stats

        container = self.containers.resolve(ref)
        if not container.running:
            raise Conflict(f"Container {container.id} is not running")
        pids = await self.supervisor.processes(container.id)
        return await stats.top(pids, ps_args)

    def subscribe_events(
        self, filters: dict[str, list[str]], since_ns: int = 0, until_ns: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """Return the events from ``since`` on that pass ``filters``, ending at ``until``.

        Filters are checked now, so a bad one raises InvalidArgument before any reply.
        """
        return self.events.subscribe(filters, since_ns, until_ns).events()

    def disk_usage(self) -> dict[str, Any]:
        """Return ``GET /system/df``: images, containers and volumes with their sizes."""
        containers = self.containers.all()
        images = self.list_images()
        usage = self._fill_shared_sizes(images)
        by_image = {image["Id"]: image["Size"] for image in images}
        container_views = []
        for container in containers:
            view = views.container_summary(container)
            view["SizeRw"] = writable_layer_size(container.rootfs)
            view["SizeRootFs"] = view["SizeRw"] + by_image.get(container.image_id, 0)
            container_views.append(view)
        return {
            "LayersSize": usage.layers_size,
            "Images": images,
            "Containers": container_views,
            "Volumes": self.volumes.usage(),
            "BuildCache": [],
        }

    def wait_container(
        self, ref: str, condition: str | None = "not-running"
    ) -> Awaitable[dict[str, Any]]:
        """Register a waiter now (before a start) and return what gives the wait body."""
        return self.containers.wait(ref, condition)

    def container_logs(self, ref: str, query: LogQuery) -> tuple[bool, AsyncIterator[bytes]]:
        """Return whether the output is raw (a TTY container) and the reply's bytes.

        The container is resolved now, so an unknown one raises NotFound before any reply.
        """
        # Imported here, at the first logs request, so that ketchd starts without the log reader.
        from ketch.engine.logs import read_log

        container = self.containers.resolve(ref)
        raw = bool(container.config.get("Tty"))
        container_id = container.id

        def is_running() -> bool:
            current = self.store.get(container_id)
            return current is not None and current.running

        query = dataclasses.replace(query, raw=raw)
        return raw, read_log(self.paths.log(container_id), query, is_running)

    async def attach_container(
        self,
        ref: str,
        stdout: bool = True,
        stderr: bool = True,
        stream: bool = True,
        logs: bool = False,
        stdin: bool = False,
    ) -> asyncio.StreamReader:
        """Return the container's output, ending at EOF with its output: docker's frames,
        or raw bytes for a TTY container. With ``stdin`` the reader's ``stdin`` takes
        the client's bytes."""
        return await self.containers.attach(ref, stdout, stderr, stream, logs, stdin)


async def _drain(output: AsyncIterator[bytes]) -> None:
    """Read a detached exec's output to its end, so that its exit code is recorded."""
    async for _ in output:
        pass
