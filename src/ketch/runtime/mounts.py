"""The config's mounts: option parsing and mounting one entry into the rootfs.

Runs in the init before pivot_root. Destinations are resolved inside the rootfs with
:mod:`ketch.runtime.inroot` and mounted through their ``/proc/self/fd/N`` path; sources of
bind mounts are host paths chosen by the caller and taken as given.
"""

from __future__ import annotations

import os

from ketch.errors import NotFound, SystemFailure
from ketch.linux import syscalls as sc
from ketch.runtime import inroot
from ketch.runtime.config import Mount
from ketch.runtime.record import Factory, Record

# Option -> (flags to set, flags to clear).
_FLAG_OPTIONS: dict[str, tuple[int, int]] = {
    "ro": (sc.MS_RDONLY, 0),
    "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0),
    "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0),
    "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0),
    "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0),
    "async": (0, sc.MS_SYNCHRONOUS),
    "dirsync": (sc.MS_DIRSYNC, 0),
    "remount": (sc.MS_REMOUNT, 0),
    "mand": (sc.MS_MANDLOCK, 0),
    "nomand": (0, sc.MS_MANDLOCK),
    "atime": (0, sc.MS_NOATIME),
    "noatime": (sc.MS_NOATIME, 0),
    "diratime": (0, sc.MS_NODIRATIME),
    "nodiratime": (sc.MS_NODIRATIME, 0),
    "relatime": (sc.MS_RELATIME, 0),
    "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0),
    "nostrictatime": (0, sc.MS_STRICTATIME),
    "nosymfollow": (sc.MS_NOSYMFOLLOW, 0),
    "symfollow": (0, sc.MS_NOSYMFOLLOW),
    "bind": (sc.MS_BIND, 0),
    "rbind": (sc.MS_BIND | sc.MS_REC, 0),
}

_PROPAGATION_OPTIONS: dict[str, int] = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}


class MountOptions(Record):
    flags: int = 0
    propagation: list[int] = Factory(list)
    data: str = ""

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def option_names() -> list[str]:
    """Return the mount options taken as flags; any other option goes to the filesystem."""
    return [*_FLAG_OPTIONS, *_PROPAGATION_OPTIONS]


def parse_options(options: list[str]) -> MountOptions:
    """Split OCI mount options into mount(2) flags, propagation changes and fs data."""
    result = MountOptions()
    data = []
    for option in options:
        if option in _FLAG_OPTIONS:
            set_flags, clear_flags = _FLAG_OPTIONS[option]
            result.flags = (result.flags | set_flags) & ~clear_flags
        elif option in _PROPAGATION_OPTIONS:
            result.propagation.append(_PROPAGATION_OPTIONS[option])
        else:
            data.append(option)
    result.data = ",".join(data)
    return result


def mount_entry(root_fd: int, entry: Mount, where: str) -> None:
    """Mount one config entry onto its destination inside the root at ``root_fd``."""
    options = parse_options(entry.options)
    if entry.type == "bind":
        options.flags |= sc.MS_BIND
    if options.is_bind:
        _bind_mount(root_fd, entry, options, where)
        return
    target = inroot.make_directories(root_fd, entry.destination)
    try:
        source = entry.source or entry.type or "none"
        flags = options.flags & ~sc.MS_REMOUNT
        sc.mount(source, inroot.fd_path(target), entry.type, flags, options.data or None)
        if options.propagation:
            _apply_propagation(root_fd, entry.destination, options)
    except OSError as error:
        raise _mount_error(entry, where, error) from None
    finally:
        os.close(target)


def _bind_mount(root_fd: int, entry: Mount, options: MountOptions, where: str) -> None:
    source = entry.source
    if not source:
        raise NotFound(f"{where}.source is missing for the bind mount onto {entry.destination}")
    if not os.path.exists(source):
        raise NotFound(f"bind mount source {source} does not exist ({where}.source)")
    if os.path.isdir(source):
        target = inroot.make_directories(root_fd, entry.destination)
    else:
        target = inroot.make_file(root_fd, entry.destination)
    try:
        sc.mount(source, inroot.fd_path(target), None, sc.MS_BIND | (options.flags & sc.MS_REC))
        # A bind mount ignores every other flag until it is remounted with them.
        extra = options.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if extra:
            remount(root_fd, entry.destination, extra)
        if options.propagation:
            _apply_propagation(root_fd, entry.destination, options)
    except OSError as error:
        raise _mount_error(entry, where, error) from None
    finally:
        os.close(target)


def _apply_propagation(root_fd: int, destination: str, options: MountOptions) -> None:
    target = inroot.open_in_root(root_fd, destination)
    try:
        for flags in options.propagation:
            sc.mount(None, inroot.fd_path(target), None, flags)
    finally:
        os.close(target)


def remount(root_fd: int, destination: str, flags: int) -> None:
    """Remount the mount at ``destination`` as a bind mount with ``flags``.

    The destination is opened again: a descriptor opened before a mount refers to the
    directory under the new mount, and /proc/self/fd/N of it would reach that one.
    """
    target = inroot.open_in_root(root_fd, destination)
    try:
        path = inroot.fd_path(target)
        # In a user namespace the flags of a mount made outside it are locked, and a
        # remount that would clear one fails with EPERM, so the current ones are kept.
        kept = os.statvfs(path).f_flag & _LOCKABLE_FLAGS
        sc.mount(None, path, None, flags | kept | sc.MS_BIND | sc.MS_REMOUNT)
    finally:
        os.close(target)


# statvfs(3) f_flag bits that are also the mount(2) flags of the same names.
_LOCKABLE_FLAGS = (
    sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME | sc.MS_NODIRATIME | sc.MS_RELATIME
)


def _mount_error(entry: Mount, where: str, error: OSError) -> SystemFailure:
    return SystemFailure(
        f"cannot mount {entry.source or entry.type} on {entry.destination} ({where}): "
        f"{error.strerror}"
    )
