"""Copying files out of and into containers: ``/containers/{id}/archive`` (``docker cp``)
and ``/containers/{id}/export``.

Paths are resolved in the container's root: the root of its init through
``/proc/<pid>/root`` while it runs (so its bind and tmpfs mounts are included), else its
rootfs. Every lookup goes through openat2 with RESOLVE_IN_ROOT (see
:mod:`ketch.runtime.inroot`) and every file is opened relative to its parent's
descriptor with O_NOFOLLOW, so a symlink in the container, such as ``/etc -> /``, never
leads to the host's files.

A GET returns a tar of the path: a file as one member named after it, a directory as
its tree under its own name. The path's stat goes in the ``X-Docker-Container-Path-Stat``
header as base64 JSON with Go's file mode bits, which the docker CLI reads. A PUT
extracts a tar into a directory of the container; members are created only below that
directory, owned by root unless the client asks to keep the tar's owners.

An export, as docker's, contains the rootfs tree only. It walks the rootfs in the host's
mount namespace, which has none of the mounts made in the container's (proc, sys, dev,
volumes, the resolv.conf and hosts files), and skips any directory mounted on another
device below it.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from ketch.errors import InvalidArgument, NotFound
from ketch.runtime import inroot

# Go's os.FileMode type bits, which the docker CLI decodes from the path stat header.
_GO_MODE_BITS = (
    (stat.S_ISDIR, 1 << 31),
    (stat.S_ISLNK, 1 << 27),
    (stat.S_ISFIFO, 1 << 25),
    (stat.S_ISSOCK, 1 << 24),
    (stat.S_ISBLK, 1 << 26),
    (stat.S_ISCHR, (1 << 26) | (1 << 21)),
)
_GO_SETUID, _GO_SETGID, _GO_STICKY = 1 << 23, 1 << 22, 1 << 20


def open_root(pid: int, rootfs: str) -> int:
    """Open the container's root: its init's root while running, else the rootfs."""
    path = f"/proc/{pid}/root" if pid else rootfs
    try:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _open(root_fd: int, path: str, container_id: str) -> int:
    try:
        return inroot.open_in_root(root_fd, path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"Could not find the file {path} in container {container_id}") from None


def _go_mode(mode: int) -> int:
    value = stat.S_IMODE(mode) & 0o777
    for test, bit in _GO_MODE_BITS:
        if test(mode):
            value |= bit
    if mode & stat.S_ISUID:
        value |= _GO_SETUID
    if mode & stat.S_ISGID:
        value |= _GO_SETGID
    if mode & stat.S_ISVTX:
        value |= _GO_STICKY
    return value


def path_stat(root_fd: int, path: str, container_id: str) -> dict[str, Any]:
    """Return the stat object of the path stat header."""
    fd = _open(root_fd, path, container_id)
    try:
        info = os.fstat(fd)
        link = os.readlink("", dir_fd=fd) if stat.S_ISLNK(info.st_mode) else ""
    finally:
        os.close(fd)
    mtime = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime))
    name = inroot.relative_parts(path)[-1] if inroot.relative_parts(path) else "/"
    return {
        "name": name,
        "size": info.st_size,
        "mode": _go_mode(info.st_mode),
        "mtime": mtime,
        "linkTarget": link,
    }


def stat_header(stat_object: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(stat_object).encode()).decode()


def write_tar(root_fd: int, path: str, container_id: str, out: IO[bytes]) -> None:
    """Write a tar of ``path`` in the container to ``out``."""
    fd = _open(root_fd, path, container_id)
    parts = inroot.relative_parts(path)
    name = parts[-1] if parts else "."
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                directory = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                try:
                    _add_tree(tar, directory, name)
                finally:
                    os.close(directory)
            else:
                parent = inroot.open_in_root(root_fd, "/".join(parts[:-1]) or "/", os.O_PATH)
                try:
                    _add_entry(tar, parent, parts[-1], name)
                finally:
                    os.close(parent)
        finally:
            os.close(fd)


def export_to_spool(rootfs: str, spool_directory: Path) -> IO[bytes]:
    """Write the tar of the rootfs tree at host path ``rootfs`` to a temporary file and
    return it, rewound."""
    root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    spool = tempfile.TemporaryFile(dir=spool_directory)
    try:
        with tarfile.open(fileobj=spool, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_tree(tar, root_fd, ".", one_device=True)
    except BaseException:
        spool.close()
        raise
    finally:
        os.close(root_fd)
    spool.seek(0)
    return spool


def _add_tree(tar: tarfile.TarFile, directory_fd: int, name: str, one_device: bool = False) -> None:
    """Add a directory and everything below it. With name "." the members have no prefix
    (an export of the whole root). With ``one_device``, directories on another device than
    the top one (mount points) are left out with their contents."""
    top_info = os.fstat(directory_fd)
    if name != ".":
        tar.addfile(_info(top_info, name + "/"))
    device = top_info.st_dev
    for top, directories, files, top_fd in os.fwalk(".", dir_fd=directory_fd):
        if one_device:
            directories[:] = [d for d in directories if _on_device(top_fd, d, device)]
        relative = top[2:] if top != "." else ""
        prefix = "/".join(part for part in (name if name != "." else "", relative) if part)
        for entry in sorted(directories + files):
            _add_entry(tar, top_fd, entry, f"{prefix}/{entry}" if prefix else entry)


def _on_device(parent_fd: int, entry: str, device: int) -> bool:
    # overlayfs reports its own device for every directory, so only a mount differs.
    try:
        return os.stat(entry, dir_fd=parent_fd, follow_symlinks=False).st_dev == device
    except FileNotFoundError:
        return False


def _add_entry(tar: tarfile.TarFile, parent_fd: int, entry: str, name: str) -> None:
    try:
        _add_existing_entry(tar, parent_fd, entry, name)
    except FileNotFoundError:
        pass  # removed while copying


def _add_existing_entry(tar: tarfile.TarFile, parent_fd: int, entry: str, name: str) -> None:
    info = os.stat(entry, dir_fd=parent_fd, follow_symlinks=False)
    member = _info(info, name)
    if stat.S_ISLNK(info.st_mode):
        member.type = tarfile.SYMTYPE
        member.linkname = os.readlink(entry, dir_fd=parent_fd)
        tar.addfile(member)
    elif stat.S_ISREG(info.st_mode):
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        with os.fdopen(fd, "rb") as file:
            tar.addfile(member, PaddedReader(file, member.size))
    elif stat.S_ISDIR(info.st_mode):
        member.type = tarfile.DIRTYPE
        tar.addfile(member)
    # Sockets, fifos and devices are left out, as their content is not data.


class PaddedReader:
    """A file read as exactly ``size`` bytes, the size in its tar header: cut there if the
    file grew since its stat, and padded with zero bytes if it shrank."""

    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self._left = size

    def read(self, count: int = -1) -> bytes:
        requested = self._left if count < 0 else min(count, self._left)
        data = self._file.read(requested)
        if len(data) < requested:
            data += bytes(requested - len(data))
        self._left -= len(data)
        return data


def _info(info: os.stat_result, name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.mode = stat.S_IMODE(info.st_mode)
    member.uid, member.gid = info.st_uid, info.st_gid
    member.mtime = int(info.st_mtime)
    if stat.S_ISDIR(info.st_mode):
        member.type = tarfile.DIRTYPE
    elif stat.S_ISREG(info.st_mode):
        member.size = info.st_size
    return member


def tar_to_spool(root_fd: int, path: str, container_id: str, spool_directory: Path) -> IO[bytes]:
    """Write the tar of ``path`` to a temporary file and return it, rewound."""
    spool = tempfile.TemporaryFile(dir=spool_directory)
    try:
        write_tar(root_fd, path, container_id, spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def extract_tar(
    root_fd: int, directory: str, data: IO[bytes], container_id: str, keep_owners: bool
) -> None:
    """Extract a tar into ``directory`` of the container, which must exist."""
    target_fd = _open(root_fd, directory, container_id)
    try:
        if not stat.S_ISDIR(os.fstat(target_fd).st_mode):
            raise InvalidArgument(f"extraction point is not a directory: {directory}")
    finally:
        os.close(target_fd)
    base = inroot.relative_parts(directory)
    try:
        tar = tarfile.open(fileobj=data, mode="r|*")
    except tarfile.TarError as error:
        raise InvalidArgument(f"invalid tar archive: {error}") from None
    with tar:
        for member in tar:
            parts = inroot.relative_parts(member.name)
            if not parts:
                continue
            _extract_member(root_fd, "/" + "/".join(base + parts), tar, member, keep_owners)


def _extract_member(
    root_fd: int, path: str, tar: tarfile.TarFile, member: tarfile.TarInfo, keep_owners: bool
) -> None:
    parent_path, _, leaf = path.rpartition("/")
    parent = inroot.make_directories(root_fd, parent_path or "/")
    try:
        if member.isdir():
            fd = inroot.make_directories(root_fd, path, member.mode & 0o7777)
            os.close(fd)
        elif member.issym():
            _remove_existing(parent, leaf)
            os.symlink(member.linkname, leaf, dir_fd=parent)
        elif member.isfile():
            _remove_existing(parent, leaf, keep_directory=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(leaf, flags, member.mode & 0o777, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                source = tar.extractfile(member)
                if source is not None:
                    while chunk := source.read(1 << 16):
                        out.write(chunk)
                os.fchmod(out.fileno(), member.mode & 0o7777)
        else:
            raise InvalidArgument(
                f"invalid tar member {member.name!r}: only files, directories and symlinks "
                "can be copied into a container"
            )
        uid, gid = (member.uid, member.gid) if keep_owners else (0, 0)
        os.chown(leaf, uid, gid, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def _remove_existing(parent_fd: int, leaf: str, keep_directory: bool = False) -> None:
    try:
        info = os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        if keep_directory:
            raise InvalidArgument(f"cannot overwrite directory {leaf!r} with a file")
        return
    os.unlink(leaf, dir_fd=parent_fd)
