"""Volumes of the local driver: create, inspect, list, remove and prune, and the mounts
that the driver's ``type`` option requests.

Records live in the engine's database (see ``ketch.engine.volume_store``) and data in
docker's layout under the data root::

    <data_root>/volumes/<name>/_data    the volume's files: what containers see

Driver options (``DriverOpts``, ``docker volume create -o``) of the local driver:

    (none)                                a plain directory
    type=tmpfs [o=size=64m,mode=1777]     a tmpfs mounted on _data at first use
    type=none o=bind device=/host/path    the host directory bind-mounted on _data

A tmpfs or bind volume is mounted when a container that uses it is created and unmounted
when its last container is removed, or when the volume is removed.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ketch.engine import timestamps
from ketch.engine.volume_store import Volume, VolumeStore
from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound, SystemFailure
from ketch.linux import syscalls

logger = logging.getLogger(__name__)

LOCAL_DRIVER = "local"

# Docker's rule for local volume names: it keeps a name usable as one directory.
VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

# The label docker (23.0 and later) puts on anonymous volumes.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"

# The tmpfs mount options a tmpfs-typed volume may set in ``o``, besides mount flags.
_TMPFS_PARAMETERS = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge")
_MOUNT_FLAGS = {
    "ro": syscalls.MS_RDONLY,
    "nosuid": syscalls.MS_NOSUID,
    "nodev": syscalls.MS_NODEV,
    "noexec": syscalls.MS_NOEXEC,
    "noatime": syscalls.MS_NOATIME,
}
_SIZE = re.compile(r"^[0-9]+[kmgKMG%]?$")


def check_name(name: str) -> None:
    if not VALID_NAME.match(name):
        raise InvalidArgument(
            f"invalid volume name {name!r}: a name is two or more of [a-zA-Z0-9_.-], starting "
            "with a letter or digit. To mount a host directory, give its absolute path"
        )


def check_local_options(name: str, options: dict[str, str]) -> None:
    """Check the local driver's options, or raise InvalidArgument naming the option."""
    unknown = sorted(set(options) - {"type", "o", "device"})
    if unknown:
        raise InvalidArgument(
            f"invalid option {unknown[0]!r} for volume {name}: the local driver takes type, o "
            "and device"
        )
    kind = options.get("type", "")
    mount_options = [item for item in options.get("o", "").split(",") if item]
    if not kind:
        if mount_options or options.get("device"):
            raise InvalidArgument(
                f"invalid options for volume {name}: o and device need a type (tmpfs, or none "
                "with o=bind)"
            )
        return
    if kind == "tmpfs":
        _check_tmpfs_options(name, mount_options)
    elif kind == "none":
        _check_bind_options(name, mount_options, options.get("device", ""))
    else:
        raise InvalidArgument(
            f"invalid option type={kind} for volume {name}: the local driver of ketch mounts "
            "type=tmpfs, or type=none with o=bind and device=/host/path"
        )


def _check_tmpfs_options(name: str, mount_options: list[str]) -> None:
    for item in mount_options:
        key, separator, value = item.partition("=")
        if not separator and key in _MOUNT_FLAGS:
            continue
        if key not in _TMPFS_PARAMETERS or not value:
            raise InvalidArgument(
                f"invalid option o={item} for tmpfs volume {name}: expected key=value with a key "
                f"of {', '.join(_TMPFS_PARAMETERS)}, or a flag of {', '.join(_MOUNT_FLAGS)}"
            )
        if key == "size" and not _SIZE.match(value):
            raise InvalidArgument(
                f"invalid option o=size={value} for tmpfs volume {name}: expected a number of "
                "bytes with an optional k, m or g suffix, or a percentage of memory such as 50%"
            )


def _check_bind_options(name: str, mount_options: list[str], device: str) -> None:
    if "bind" not in mount_options and "rbind" not in mount_options:
        raise InvalidArgument(
            f"invalid options for volume {name}: type=none needs o=bind (or rbind)"
        )
    extra = [item for item in mount_options if item not in ("bind", "rbind", "ro", "rw")]
    if extra:
        raise InvalidArgument(
            f"invalid option o={extra[0]} for bind volume {name}: expected bind, rbind, ro or rw"
        )
    if not device.startswith("/"):
        raise InvalidArgument(
            f"invalid option device={device!r} for bind volume {name}: expected an absolute "
            "path of a host directory"
        )
    if not os.path.isdir(device):
        raise InvalidArgument(
            f"invalid option device={device} for bind volume {name}: no such directory"
        )


def is_mount_point(path: Path) -> bool:
    """Return whether ``path`` is a mount point in this mount namespace.

    os.path.ismount() misses a bind mount from the same filesystem, so mountinfo is read.
    """
    target = str(path)
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            mount_point = line.split(" ", 5)[4]
            if _unescape_mountinfo(mount_point) == target:
                return True
    return False


def _unescape_mountinfo(field: str) -> str:
    # The kernel writes space, tab, newline and backslash as three octal digits.
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def directory_size(path: Path) -> int:
    """Return the bytes of the regular files below ``path``, following no symlink."""
    total = 0
    pending = [str(path)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


class VolumeService:
    """The volumes of one engine. Used from the event loop only.

    ``container_exists`` returns a true value for the id of an existing container, so a
    mount point of a live container can be distinguished from one that an interrupted
    removal left.
    """

    def __init__(self, data_root: Path, db: Any) -> None:
        self.root = data_root / "volumes"
        self.store = VolumeStore(db)
        self.container_exists: Callable[[str], Any] = lambda container_id: True
        # An events.EventBus for docker's volume create and destroy events; None sends none.
        self.events: Any = None

    def data_path(self, name: str) -> Path:
        return self.root / name / "_data"

    # Create and look up

    def create(
        self,
        name: str = "",
        driver: str = "",
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        anonymous: bool = False,
    ) -> Volume:
        """Create a volume, or return the existing one of that name (as docker does)."""
        driver = driver or LOCAL_DRIVER
        if name:
            check_name(name)
        else:
            name = self._random_name()

        existing = self.store.get(name)
        if existing is not None:
            if existing.driver != driver:
                raise Conflict(
                    f"volume {name} already exists with driver {existing.driver}, not {driver}"
                )
            return existing

        if driver != LOCAL_DRIVER:
            raise InvalidArgument(
                f"invalid volume driver {driver!r} for volume {name}: only local is available"
            )
        check_local_options(name, options or {})
        labels = dict(labels or {})
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")

        volume = Volume(
            name=name,
            driver=driver,
            labels=labels,
            options=dict(options) if options is not None else None,
            created=timestamps.now(),
            anonymous=anonymous,
        )
        self._make_directory(volume)
        logger.info("created volume %s", name)
        self._publish("create", volume)
        return volume

    def _random_name(self) -> str:
        while True:
            name = secrets.token_hex(32)
            if self.store.get(name) is None:
                return name

    def _make_directory(self, volume: Volume) -> None:
        directory = self.root / volume.name
        self.root.mkdir(mode=0o701, parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o701, exist_ok=True)
            self.data_path(volume.name).mkdir(mode=0o755, exist_ok=True)
            self.store.add(volume)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def get(self, name: str) -> Volume:
        volume = self.store.get(name)
        if volume is None:
            raise NotFound(f"get {name}: no such volume")
        return volume

    def view(self, volume: Volume, usage: bool = False) -> dict[str, Any]:
        """Return docker's Volume object, with UsageData (Size and RefCount) if ``usage`` is set."""
        result: dict[str, Any] = {
            "CreatedAt": volume.created,
            "Driver": volume.driver,
            "Labels": dict(volume.labels),
            "Mountpoint": str(self.data_path(volume.name)),
            "Name": volume.name,
            "Options": dict(volume.options) if volume.options is not None else None,
            "Scope": "local",
        }
        if usage:
            result["UsageData"] = {
                "Size": directory_size(self.data_path(volume.name)),
                "RefCount": len(self.users(volume.name)),
            }
        return result

    def users(self, name: str) -> list[str]:
        """Return the ids of the containers that use volume ``name``."""
        return [
            container_id
            for container_id in self.store.users(name)
            if self.container_exists(container_id)
        ]

    # List

    def list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        """Return ``GET /volumes``'s volumes after the name, label, dangling and driver
        filters."""
        filters = filters or {}
        unknown = sorted(set(filters) - {"name", "label", "dangling", "driver"})
        if unknown:
            raise InvalidArgument(
                f"invalid filter {unknown[0]!r}: volumes support name, label, dangling, driver"
            )
        selected = self.store.all()
        for pattern in filters.get("name", []):
            selected = [v for v in selected if _pattern_matches(pattern, v.name)]
        for pattern in filters.get("driver", []):
            selected = [v for v in selected if _pattern_matches(pattern, v.driver)]
        for label in filters.get("label", []):
            selected = [v for v in selected if _label_matches(label, v.labels)]
        for value in filters.get("dangling", []):
            dangling = _boolean_filter("dangling", value)
            selected = [v for v in selected if (not self.users(v.name)) == dangling]
        return [self.view(volume) for volume in selected]

    # Mount for use

    def mount_for_use(self, volume: Volume) -> Path:
        """Mount a tmpfs or bind volume on its _data if it is not mounted yet, and return _data."""
        data = self.data_path(volume.name)
        options = volume.options or {}
        kind = options.get("type", "")
        if not kind or is_mount_point(data):
            return data
        mount_options = [item for item in options.get("o", "").split(",") if item]
        flags = 0
        for item in mount_options:
            flags |= _MOUNT_FLAGS.get(item, 0)
        try:
            if kind == "tmpfs":
                parameters = ",".join(item for item in mount_options if "=" in item)
                syscalls.mount("tmpfs", data, "tmpfs", flags, parameters or None)
            else:
                recursive = syscalls.MS_REC if "rbind" in mount_options else 0
                syscalls.mount(options["device"], data, None, syscalls.MS_BIND | recursive)
                if flags & syscalls.MS_RDONLY:
                    remount = syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY
                    syscalls.mount(None, data, None, remount)
        except OSError as error:
            if is_mount_point(data):
                syscalls.umount(data, syscalls.MNT_DETACH)
            raise SystemFailure(f"cannot mount volume {volume.name} on {data}: {error}") from None
        logger.info("mounted volume %s (type %s)", volume.name, kind)
        return data

    def unmount_if_unused(self, name: str) -> None:
        """Unmount a tmpfs or bind volume that no container uses any more."""
        volume = self.store.get(name)
        if volume is None or self.users(name):
            return
        self._unmount(volume)

    def _unmount(self, volume: Volume) -> None:
        data = self.data_path(volume.name)
        if not is_mount_point(data):
            return
        try:
            syscalls.umount(data, syscalls.MNT_DETACH)
        except OSError as error:
            raise SystemFailure(f"cannot unmount volume {volume.name} at {data}: {error}") from None
        logger.info("unmounted volume %s", volume.name)

    # Remove and prune

    def remove(self, name: str, force: bool = False) -> None:
        """Remove a volume that no container uses. With ``force``, a missing volume is ignored."""
        volume = self.store.get(name)
        if volume is None:
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        users = self.users(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        self._delete(volume)

    def _delete(self, volume: Volume) -> None:
        self._unmount(volume)
        directory = self.root / volume.name
        data = self.data_path(volume.name)
        if is_mount_point(data):
            raise SystemFailure(f"cannot remove volume {volume.name}: {data} is still mounted")
        self.store.remove(volume.name)
        if (volume.options or {}).get("type") == "none":
            # The files belong to the host directory, which was only bind-mounted here.
            for path in (data, directory):
                try:
                    os.rmdir(path)
                except OSError as error:
                    logger.warning("failed to remove %s of volume %s: %s", path, volume.name, error)
        else:
            shutil.rmtree(directory, ignore_errors=True)
        logger.info("removed volume %s", volume.name)
        self._publish("destroy", volume)

    def _publish(self, action: str, volume: Volume) -> None:
        if self.events is not None:
            self.events.publish("volume", action, volume.name, {"driver": volume.driver})

    def remove_anonymous(self, names: list[str]) -> None:
        """Remove the anonymous volumes among ``names`` that no container uses any more."""
        for name in names:
            volume = self.store.get(name)
            if volume is None or not volume.anonymous or self.users(name):
                continue
            try:
                self._delete(volume)
            except KetchError as error:
                logger.warning("failed to remove anonymous volume %s: %s", name, error)

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """Remove unused anonymous volumes, or with ``all=true`` unused named ones too,
        that pass the label filters; return docker's prune report."""
        filters = filters or {}
        unknown = sorted(set(filters) - {"label", "label!", "all"})
        if unknown:
            raise InvalidArgument(
                f"invalid filter {unknown[0]!r}: volume prune supports label, label! and all"
            )
        prune_named = any(_boolean_filter("all", value) for value in filters.get("all", []))
        deleted, reclaimed = [], 0
        for volume in self.store.all():
            if not (volume.anonymous or prune_named) or self.users(volume.name):
                continue
            if not all(_label_matches(label, volume.labels) for label in filters.get("label", [])):
                continue
            if any(_label_matches(label, volume.labels) for label in filters.get("label!", [])):
                continue
            size = directory_size(self.data_path(volume.name))
            try:
                self._delete(volume)
            except KetchError as error:
                logger.warning("failed to prune volume %s: %s", volume.name, error)
                continue
            deleted.append(volume.name)
            reclaimed += size
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}

    def usage(self) -> list[dict[str, Any]]:
        """Return the volumes with UsageData, for ``GET /system/df``."""
        return [self.view(volume, usage=True) for volume in self.store.all()]


def _pattern_matches(pattern: str, value: str) -> bool:
    # Docker matches these filters as regular expressions anywhere in the value.
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return pattern in value


def _label_matches(label: str, labels: dict[str, str]) -> bool:
    key, separator, value = label.partition("=")
    if key not in labels:
        return False
    return not separator or labels[key] == value


def _boolean_filter(name: str, value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid filter '{name}={value}': expected true or false")
