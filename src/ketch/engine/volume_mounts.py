"""Volumes in containers: the volume entries of Binds and Mounts, anonymous volumes, and
``--volumes-from``, turned into the bind mounts of a container's OCI spec.

``hostconfig`` parses the create body and leaves each volume it finds as a placeholder
mount of type ``volume`` (see :func:`volume_placeholder`). At create time, once the
rootfs is mounted, :meth:`ContainerVolumes.attach` resolves the placeholders in order:

1. ``HostConfig.VolumesFrom``: the other container's volume and bind mount points, with
   its mode unless ``:ro`` or ``:rw`` overrides it;
2. the placeholders of Binds and Mounts, each a named volume (created if missing) or,
   with no source, a new anonymous one. A mount of the container's own replaces a
   volumes-from mount at the same destination;
3. ``Config.Volumes`` (the image's VOLUME and the client's ``-v /path``): an anonymous
   volume for each destination that nothing above covers.

A volume's first mount copies the image's files at the destination into it when it is
empty, unless the mount sets ``nocopy``. That copy runs in a worker thread in
:meth:`ContainerVolumes.populate`, which the create awaits after the container's row
exists, so a large directory does not stall other requests. Every mount point from a volume or from
volumes-from is recorded in the volume store, which is what inspect's ``Mounts`` shows
and what makes a volume in use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch.engine.volume_store import Volume
from ketch.engine.volumes import VolumeService, check_name
from ketch.errors import Conflict, InvalidArgument, KetchError, SystemFailure
from ketch.runtime import inroot

if TYPE_CHECKING:
    from ketch.engine.options import CreateOptions

logger = logging.getLogger(__name__)

_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_BIND_MODES = ("ro", "rw", "z", "Z", "nocopy", *_PROPAGATIONS)


def volume_placeholder(
    source: str,
    target: str,
    read_only: bool,
    where: str,
    *,
    mode: str = "",
    nocopy: bool = False,
    labels: dict[str, str] | None = None,
    driver: str = "",
    driver_options: dict[str, str] | None = None,
    propagation: str = "",
) -> dict[str, Any]:
    """Return the placeholder mount of a volume: ``source`` is a volume name, or empty
    for a new anonymous volume."""
    if source:
        check_name(source)
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid {where}: target {target!r} is not an absolute path")
    options = ["ro"] if read_only else []
    if propagation:
        options.append(propagation)
    return {
        "destination": target,
        "type": "volume",
        "source": source,
        "options": options,
        "mode": mode,
        "nocopy": nocopy,
        "labels": dict(labels or {}),
        "driver": driver,
        "driver_options": driver_options,
    }


def _are_modes(text: str) -> bool:
    """Return True if ``text`` is a list of bind modes, as in ``/path:ro``, rather than a
    destination, as in ``/host:/path``."""
    return all(item in _BIND_MODES for item in text.split(",") if item)


def parse_volume_bind(bind: str) -> dict[str, Any] | None:
    """Return the placeholder of a Binds entry that names a volume (``name:/path[:mode]``)
    or only a destination (``/path``), or None for a host path bind."""
    parts = bind.split(":")
    where = f"HostConfig.Binds entry {bind!r}"
    if len(parts) == 1:
        return volume_placeholder("", parts[0], False, where)

    if len(parts) == 2 and parts[0].startswith("/") and _are_modes(parts[1]):
        # Reject a destination with a mode, such as /data:ro, because an anonymous volume
        # takes no mode.
        raise InvalidArgument(f"invalid volume specification: {bind!r}")
    if len(parts) in (2, 3):
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else ""
    else:
        return None
    if source.startswith("/"):
        return None

    modes = [item for item in mode.split(",") if item]
    for item in modes:
        if item not in _BIND_MODES:
            raise InvalidArgument(
                f"invalid {where}: mode {item!r}; expected ro, rw, nocopy, z, Z or a propagation"
            )
    propagation = next((item for item in modes if item in _PROPAGATIONS), "")
    return volume_placeholder(
        source,
        target,
        "ro" in modes,
        where,
        mode=mode,
        nocopy="nocopy" in modes,
        propagation=propagation,
    )


def parse_volume_mount(mount: dict[str, Any], where: str) -> dict[str, Any]:
    """Return the placeholder of a HostConfig.Mounts entry of type volume."""
    options = mount.get("VolumeOptions") or {}
    if not isinstance(options, dict):
        raise InvalidArgument(f"invalid {where}: VolumeOptions must be an object")
    if options.get("Subpath"):
        raise InvalidArgument(f"invalid {where}: VolumeOptions.Subpath is not supported")
    if mount.get("BindOptions") or mount.get("TmpfsOptions"):
        raise InvalidArgument(
            f"invalid {where}: BindOptions and TmpfsOptions do not apply to a volume mount"
        )
    driver_config = options.get("DriverConfig") or {}
    return volume_placeholder(
        mount.get("Source") or "",
        mount.get("Target") or "",
        bool(mount.get("ReadOnly")),
        where,
        nocopy=bool(options.get("NoCopy")),
        labels=options.get("Labels") or {},
        driver=driver_config.get("Name") or "",
        driver_options=driver_config.get("Options") or None,
    )


def volume_point(
    volume: Volume, data: Path, destination: str, read_only: bool, mode: str, propagation: str = ""
) -> dict:
    """Return inspect's mount point of a volume."""
    return {
        "Type": "volume",
        "Name": volume.name,
        "Source": str(data),
        "Destination": destination,
        "Driver": volume.driver,
        "Mode": mode,
        "RW": not read_only,
        "Propagation": propagation,
    }


def oci_mount(point: dict[str, Any]) -> dict[str, Any]:
    """Return the OCI bind mount of a mount point."""
    options = ["rbind", point.get("Propagation") or "rprivate"]
    if not point["RW"]:
        options.append("ro")
    return {
        "destination": point["Destination"],
        "type": "bind",
        "source": point["Source"],
        "options": options,
    }


def check_unique_destinations(mounts: list[dict[str, Any]]) -> None:
    """Raise InvalidArgument, with dockerd's message, when two of the container's own mounts
    (Binds, Mounts and Tmpfs) share a destination.

    dockerd rejects a destination repeated in Binds and Mounts, or named in both Binds and
    Tmpfs, with "Duplicate mount point: <destination>" and status 400. ketch rejects every
    repeat among these mounts, because the second mount would hide the first.
    """
    seen: set[str] = set()
    for mount in mounts:
        destination = posixpath.normpath(mount["destination"])
        if destination in seen:
            raise InvalidArgument(f"Duplicate mount point: {destination}")
        seen.add(destination)


def check_requested_driver(volume: Volume, driver: str) -> None:
    """Raise Conflict, with dockerd's message, when a mount requests a driver other than
    that of the existing volume it names. An empty ``driver`` requests none.

    dockerd first looks the requested driver up, so for a driver that is not installed it
    returns a "plugin not found" error instead. ketch has only the local driver and skips
    that lookup, so that the message names the volume that exists.
    """
    if driver and driver != volume.driver:
        raise Conflict(
            f"create {volume.name}: driver '{volume.driver}' already has volume "
            f"'{volume.name}': volume name must be unique"
        )


def copy_image_content(rootfs: Path, destination: str, data: Path) -> None:
    """Copy the rootfs's directory at ``destination`` into the volume directory ``data``,
    keeping owners, modes, times and links.

    The directory is opened with openat2 and RESOLVE_IN_ROOT, so a symlink in the image
    cannot make the copy read the host's files, and ``cp -a`` copies symlinks below it as
    symlinks without following them.
    """
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise SystemFailure(f"cannot open the rootfs {rootfs}: {error.strerror}") from None
    try:
        try:
            source_fd = inroot.open_in_root(root_fd, destination, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            if not inroot.is_directory(source_fd):
                return
            result = subprocess.run(
                ["cp", "-a", "--no-target-directory", f"/proc/self/fd/{source_fd}/.", str(data)],
                pass_fds=(source_fd,),
                capture_output=True,
                text=True,
            )
        finally:
            os.close(source_fd)
    finally:
        os.close(root_fd)
    if result.returncode != 0:
        raise SystemFailure(
            f"cannot copy the image's {destination} into volume {data.parent.name}: "
            f"{result.stderr.strip()}"
        )


def _copy_into_empty(rootfs: Path, destination: str, data: Path) -> None:
    # Copy into an empty volume only, because another container may have filled it meanwhile.
    if not os.listdir(data):
        copy_image_content(rootfs, destination, data)


class ContainerVolumes:
    """The volumes that containers mount: attach at create, detach at remove."""

    def __init__(self, volumes: VolumeService) -> None:
        self.volumes = volumes
        # Per container being created: (rootfs, destination, volume data) still to copy.
        self._pending_copies: dict[str, list[tuple[Path, str, Path]]] = {}

    def attach(
        self,
        container_id: str,
        options: CreateOptions,
        config: dict[str, Any],
        rootfs: Path,
        resolve: Callable[[str], Any],
    ) -> None:
        """Replace the volume placeholders in ``options.host.mounts`` by bind mounts, add the
        mounts of volumes-from and anonymous volumes, and record the mount points.

        ``config["Volumes"]`` gets the client's Config.Volumes beside the image's. On
        failure, the volumes this call created are removed again, and the ones it mounted
        are unmounted unless another container uses them.
        """
        volumes = {**(config.get("Volumes") or {}), **options.volumes}
        config["Volumes"] = volumes or None
        mounts, host_config = options.host.mounts, options.raw_host_config
        created: list[str] = []
        mounted: list[str] = []
        try:
            points = self._resolve_points(
                container_id, mounts, config, host_config, resolve, created
            )
            self._prepare_volumes(container_id, points, rootfs, mounted)
        except BaseException:
            self._remove_created(created)
            self._unmount_unused(mounted)
            raise
        self.volumes.store.add_mount_points(container_id, [point for point, _ in points])

    def _resolve_points(
        self,
        container_id: str,
        mounts: list[dict[str, Any]],
        config: dict[str, Any],
        host_config: dict[str, Any],
        resolve: Callable[[str], Any],
        created: list[str],
    ) -> list[tuple[dict[str, Any], bool]]:
        """Return (mount point, copy image content) pairs and rewrite ``mounts``."""
        check_unique_destinations(mounts)
        own_targets = {mount["destination"] for mount in mounts}
        points: list[tuple[dict[str, Any], bool]] = []
        for point in self._points_from(host_config, resolve):
            if point["Destination"] not in own_targets:
                points.append((point, False))
        for index, mount in enumerate(mounts):
            if mount["type"] != "volume":
                continue
            volume = self._volume_for(mount, created)
            data = self.volumes.data_path(volume.name)
            read_only = "ro" in mount["options"]
            propagation = next((o for o in mount["options"] if o in _PROPAGATIONS), "")
            point = volume_point(
                volume, data, mount["destination"], read_only, mount["mode"], propagation
            )
            mounts[index] = oci_mount(point)
            points.append((point, not mount["nocopy"]))

        covered = own_targets | {point["Destination"] for point, _ in points}
        for destination in sorted(config.get("Volumes") or {}):
            if destination in covered:
                continue
            if not destination.startswith("/"):
                raise InvalidArgument(
                    f"invalid Config.Volumes entry {destination!r}: expected an absolute path"
                )
            volume = self._create(created, anonymous=True)
            point = volume_point(
                volume, self.volumes.data_path(volume.name), destination, False, ""
            )
            points.append((point, True))
        mounts.extend(
            oci_mount(point) for point, _ in points if point["Destination"] not in own_targets
        )
        logger.debug("container %s mounts %d volume points", container_id, len(points))
        return points

    def _points_from(
        self, host_config: dict[str, Any], resolve: Callable[[str], Any]
    ) -> list[dict[str, Any]]:
        """Return the mount points that HostConfig.VolumesFrom copies, one per destination.

        A later entry's mount point replaces an earlier one at the same destination, as in
        dockerd, which keeps VolumesFrom mount points in a map keyed by destination
        (daemon/volumes.go, registerMountPoints) and raises no error for them.
        """
        from ketch.engine.views import mount_points

        entries = host_config.get("VolumesFrom") or []
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise InvalidArgument(
                "invalid create body: HostConfig.VolumesFrom must be a list of strings"
            )
        points: dict[str, dict[str, Any]] = {}
        for entry in entries:
            reference, _, mode = entry.partition(":")
            if mode not in ("", "ro", "rw"):
                raise InvalidArgument(
                    f"invalid HostConfig.VolumesFrom entry {entry!r}: mode {mode!r}; expected ro "
                    "or rw"
                )
            source = resolve(reference)
            copied = self.volumes.store.mount_points(source.id)
            copied += [p for p in mount_points(source.host_config) if p["Type"] == "bind"]
            for point in copied:
                point = dict(point)
                if mode:
                    point["RW"] = mode == "rw"
                    point["Mode"] = mode
                points[point["Destination"]] = point
        return list(points.values())

    def _volume_for(self, mount: dict[str, Any], created: list[str]) -> Volume:
        name = mount["source"]
        if not name:
            return self._create(created, anonymous=True, labels=mount["labels"])
        existing = self.volumes.store.get(name)
        if existing is not None:
            check_requested_driver(existing, mount["driver"])
            return existing
        return self._create(
            created,
            name=name,
            driver=mount["driver"],
            options=mount["driver_options"],
            labels=mount["labels"],
        )

    def _create(self, created: list[str], **arguments: Any) -> Volume:
        volume = self.volumes.create(**arguments)
        created.append(volume.name)
        return volume

    def _prepare_volumes(
        self,
        container_id: str,
        points: list[tuple[dict[str, Any], bool]],
        rootfs: Path,
        mounted: list[str],
    ) -> None:
        """Mount tmpfs and bind volumes, adding their names to ``mounted``, and note the
        copies of image content for populate()."""
        copies = []
        for point, copy in points:
            if point["Type"] != "volume":
                continue
            volume = self.volumes.get(point["Name"])
            data = self.volumes.mount_for_use(volume)
            mounted.append(volume.name)
            if copy:
                copies.append((rootfs, point["Destination"], data))
        self._pending_copies[container_id] = copies

    async def populate(
        self, container: Any, remove: Callable[[Any, bool], Awaitable[None]]
    ) -> None:
        """Copy the image's content into the new container's empty volumes, in a thread.

        If a copy fails, ``remove(container, True)`` removes the container and its
        anonymous volumes before the error is raised again.
        """
        copies = self._pending_copies.pop(container.id, [])
        try:
            for rootfs, destination, data in copies:
                await asyncio.to_thread(_copy_into_empty, rootfs, destination, data)
        except BaseException:
            await remove(container, True)
            raise

    def _remove_created(self, names: list[str]) -> None:
        for name in names:
            volume = self.volumes.store.get(name)
            if volume is None:
                continue
            try:
                self.volumes.remove(name)
            except KetchError as error:
                logger.warning("failed to remove volume %s after a failed create: %s", name, error)

    def mount_for_start(self, container_id: str) -> None:
        """Mount the container's tmpfs and bind volumes that are not mounted, for example
        after the host restarted, so that the container never gets the bare _data directory."""
        for point in self.volumes.store.mount_points(container_id):
            volume = (
                self.volumes.store.get(point.get("Name", "")) if point["Type"] == "volume" else None
            )
            if volume is not None:
                self.volumes.mount_for_use(volume)

    def detach(self, container_id: str, remove_anonymous: bool = False) -> None:
        """Forget a removed container's mount points, unmount volumes nothing else uses, and
        with ``remove_anonymous`` remove its anonymous volumes (``rm -v``, ``--rm``)."""
        self._pending_copies.pop(container_id, None)
        points = self.volumes.store.remove_mount_points(container_id)
        names = [point["Name"] for point in points if point.get("Type") == "volume"]
        if remove_anonymous:
            self.volumes.remove_anonymous(names)
        self._unmount_unused(names)

    def _unmount_unused(self, names: list[str]) -> None:
        for name in names:
            try:
                self.volumes.unmount_if_unused(name)
            except KetchError as error:
                logger.warning("failed to unmount volume %s: %s", name, error)

    def forget_missing(self, container_ids: set[str]) -> None:
        """Drop the mount points of containers that no longer exist, after a crash."""
        for container_id in self.volumes.store.container_ids() - container_ids:
            logger.warning("forgetting the volume mounts of missing container %s", container_id)
            self.detach(container_id)

    def select(self, containers: list[Any], values: list[str], limit: int) -> list[Any]:
        """Return the containers that mount any of ``values``, a volume name, a bind source
        or a destination (``docker ps --filter volume=``), at most ``limit`` if it is > 0."""
        from ketch.engine.views import mount_points

        requested_values = set(values)
        selected = []
        for container in containers:
            points = mount_points(container.host_config) + self.mount_points(container.id)
            names = {
                point.get(key) for point in points for key in ("Name", "Source", "Destination")
            }
            if names & requested_values:
                selected.append(container)
        return selected[:limit] if limit > 0 else selected

    def mount_points(self, container_id: str) -> list[dict[str, Any]]:
        return self.volumes.store.mount_points(container_id)
