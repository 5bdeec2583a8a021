"""Opening and creating paths inside a rootfs without following a symlink out of it.

A rootfs comes from an image, so any of its components may be a symlink such as
``/etc -> /`` or ``/mnt -> ../../..``. A path joined as a string and handed to mount(2)
would follow it to the host. Here an existing path is resolved by the kernel with
openat2(2) and RESOLVE_IN_ROOT, which treats the rootfs descriptor as ``/`` for ``..``
and for absolute symlinks. Paths to create are walked by the same rule, one component
at a time. The result is used through its descriptor, and :func:`fd_path` turns that
into a ``/proc/self/fd/N`` path that mount(2) can take as its target.
"""

from __future__ import annotations

import os
import posixpath
import stat

from ketch.errors import SystemFailure
from ketch.linux import syscalls

_RESOLVE = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS

# The kernel's own limit on symlinks followed in one path lookup (MAXSYMLINKS).
_MAX_LINKS = 40


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
    return _walk_creating(root_fd, path, final_directory=True, mode=mode)


def make_file(root_fd: int, path: str, mode: int = 0o644) -> int:
    """Create ``path`` as an empty file if it is missing; return an O_PATH fd to it."""
    if not relative_parts(path):
        raise SystemFailure("cannot create a file at the root of the rootfs")
    return _walk_creating(root_fd, path, final_directory=False, mode=mode)


def is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _walk_creating(root_fd: int, path: str, *, final_directory: bool, mode: int) -> int:
    """Walk ``path`` one component at a time from the root, creating what is missing.

    Symlinks are read and followed here, not by the kernel: an absolute target restarts
    at the root and ``..`` never climbs above it, so the walk stays inside the rootfs.
    A link whose target is missing gets that target created inside the rootfs, as runc
    does, because an image may ship /etc/resolv.conf as a link to a file that exists
    only at run time. Every open uses O_NOFOLLOW, so no step follows a link by itself.
    """
    pending = relative_parts(path)
    current_parts: list[str] = []
    current = os.dup(root_fd)
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            last = not pending
            if name == "..":
                current_parts = current_parts[:-1]
                parent = open_in_root(root_fd, "/".join(current_parts), os.O_PATH | os.O_DIRECTORY)
                os.close(current)
                current = parent
                continue
            as_file = last and not final_directory
            info = _lstat_or_create(current, name, as_file, mode if last else 0o755, path)
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise SystemFailure(f"cannot resolve {path} in the rootfs: too many symlinks")
                target = os.readlink(name, dir_fd=current)
                if target.startswith("/"):
                    current_parts = []
                    os.close(current)
                    current = os.dup(root_fd)
                pending = [part for part in target.split("/") if part not in ("", ".")] + pending
                continue
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            if not last or final_directory:
                flags |= os.O_DIRECTORY
            next_fd = _open_component(current, name, flags, path)
            os.close(current)
            current = next_fd
            current_parts.append(name)
    except BaseException:
        os.close(current)
        raise
    return current


def _lstat_or_create(
    parent_fd: int, name: str, as_file: bool, mode: int, whole_path: str
) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    try:
        if as_file:
            # O_EXCL with O_CREAT never follows a link: it creates a new file or fails.
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(name, flags, mode, dir_fd=parent_fd))
        else:
            os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        pass  # made by a concurrent create, which serves as well
    except OSError as error:
        raise SystemFailure(f"cannot create {whole_path} in the rootfs: {error.strerror}") from None
    return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)


def _open_component(parent_fd: int, name: str, flags: int, whole_path: str) -> int:
    try:
        return os.open(name, flags, dir_fd=parent_fd)
    except NotADirectoryError:
        raise SystemFailure(
            f"cannot create {whole_path} in the rootfs: {name} is not a directory"
        ) from None
