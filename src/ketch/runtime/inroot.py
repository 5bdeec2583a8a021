"""Opening and creating paths inside a rootfs without following a symlink out of it.

A rootfs comes from an image, so any of its components may be a symlink such as
``/etc -> /`` or ``/mnt -> ../../..``. A path joined as a string and handed to mount(2)
would follow it to the host. Here every path is resolved by the kernel with openat2(2) and
RESOLVE_IN_ROOT, which treats the rootfs descriptor as ``/`` for ``..`` and for absolute
symlinks, and the result is used through its descriptor. :func:`fd_path` turns such a
descriptor into a ``/proc/self/fd/N`` path that mount(2) can take as its target.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from ketch.errors import SystemFailure
from ketch.linux import syscalls

_RESOLVE = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def relative_parts(path: str) -> list[str]:
    """Split an absolute container path into components, with ``..`` resolved lexically."""
    normalized = posixpath.normpath("/" + path)
    return [part for part in normalized.split("/") if part]


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    """Open ``path`` as seen from ``root_fd``; symlinks resolve inside the root."""
    relative = "/".join(relative_parts(path)) or "."
    return syscalls.openat2(root_fd, relative, flags, _RESOLVE)


def make_directories(root_fd: int, path: str, mode: int = 0o755) -> int:
    """Create missing directories of ``path`` inside the root; return an O_PATH fd to it."""
    parts = relative_parts(path)
    current = os.dup(root_fd)
    try:
        for index, name in enumerate(parts):
            prefix = "/".join(parts[: index + 1])
            try:
                next_fd = open_in_root(root_fd, prefix, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                _mkdir_at(current, name, mode, path)
                next_fd = open_in_root(root_fd, prefix, os.O_PATH | os.O_DIRECTORY)
            os.close(current)
            current = next_fd
    except BaseException:
        os.close(current)
        raise
    return current


def make_file(root_fd: int, path: str, mode: int = 0o644) -> int:
    """Create ``path`` as an empty file if it is missing; return an O_PATH fd to it."""
    parts = relative_parts(path)
    if not parts:
        raise SystemFailure("cannot create a file at the root of the rootfs")
    try:
        return open_in_root(root_fd, path)
    except FileNotFoundError:
        pass
    parent = make_directories(root_fd, "/".join(parts[:-1]))
    try:
        try:
            # O_NOFOLLOW|O_EXCL: creates a new file or fails; it never writes through a link.
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(parts[-1], flags, mode, dir_fd=parent))
        except FileExistsError:
            pass
        try:
            return open_in_root(root_fd, path)
        except FileNotFoundError:
            raise _dangling(path, parts[-1]) from None
    finally:
        os.close(parent)


def _dangling(whole_path: str, name: str) -> SystemFailure:
    # Present but not resolvable inside the root: a symlink to a missing target, perhaps
    # one that exists only outside the rootfs.
    # NOTE: unlike runc, the target of such a link is not created inside the rootfs; the
    # mount fails instead.
    return SystemFailure(
        f"cannot create {whole_path} in the rootfs: {name} is a symlink whose target "
        "does not exist inside the rootfs"
    )


def is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _mkdir_at(parent_fd: int, name: str, mode: int, whole_path: str) -> None:
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        raise _dangling(whole_path, name) from None
    except OSError as error:
        if error.errno == errno.ENOTDIR:
            raise SystemFailure(
                f"cannot create {whole_path} in the rootfs: a component is not a directory"
            ) from None
        raise
