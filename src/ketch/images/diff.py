"""Layer diffs: the changes a container made, written as a layer tar for commit and build.

Two sources of changes, one output form:

* ``diff_overlay_upper``: an overlayfs upper directory is the change set already. Its
  whiteouts are converted back to the form a layer tar carries: a 0/0 character device
  ``dir/NAME`` becomes an empty file ``dir/.wh.NAME``, and a directory with
  ``trusted.overlay.opaque=y`` gets a ``dir/.wh..wh..opq`` entry right after its own.
* ``diff_trees``: a container root filesystem that is a full copy (the copying
  snapshotter) is compared with the parent snapshot's tree. A path whose type, mode,
  owner, size, mtime, device number, symlink target or xattrs differ is written, with its
  parent directories. A path gone from the copy becomes a ``.wh.NAME`` whiteout.

The tar is PAX, written in a fixed order (directory by directory, top down, each one's
entries sorted by name) with no user or group names, so that the same change set gives
the same diff ID. Files are read with ``O_NOFOLLOW`` below directory file
descriptors (``os.fwalk``), so a symlink a container planted is stored as a symlink and
never followed. Hard links within the change set stay hard links. Sockets are skipped,
as docker skips them. ``trusted.*`` xattrs are overlayfs bookkeeping and never copied.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ketch.errors import NotFound, SystemFailure
from ketch.images.layers import OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX

log = logging.getLogger(__name__)

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class LayerDiff:
    diff_id: str  # digest of the uncompressed tar written
    size: int  # bytes of the uncompressed tar


class _HashingWriter:
    """A binary stream wrapper that hashes and counts what is written through it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._hash.update(data)
        self.count += len(data)
        return len(data)

    def result(self) -> LayerDiff:
        return LayerDiff("sha256:" + self._hash.hexdigest(), self.count)


@dataclass(frozen=True)
class _Change:
    """One path to write: ``name`` relative to the root, looked up in ``parent_fd``."""

    name: str
    leaf: str
    parent_fd: int
    info: os.stat_result


def diff_overlay_upper(upper: Path, out: BinaryIO) -> LayerDiff:
    """Write the overlayfs upper directory ``upper`` to ``out`` as a layer tar."""
    writer = _HashingWriter(out)
    with _TarWriter(writer) as tar:
        for directory, names, files, directory_fd in _walk(upper):
            for leaf in sorted(names + files):
                name = f"{directory}/{leaf}" if directory else leaf
                info = os.stat(leaf, dir_fd=directory_fd, follow_symlinks=False)
                if _is_overlay_whiteout(info):
                    tar.add_whiteout(name)
                    continue
                tar.add(_Change(name, leaf, directory_fd, info))
                if stat.S_ISDIR(info.st_mode) and _is_opaque(leaf, directory_fd):
                    tar.add_opaque(name)
    return writer.result()


def diff_trees(lower: Path, upper: Path, out: BinaryIO) -> LayerDiff:
    """Write the changes from the tree ``lower`` to the tree ``upper`` as a layer tar."""
    writer = _HashingWriter(out)
    lower_fd = _open_root(lower)
    try:
        with _TarWriter(writer) as tar:
            for directory, names, files, directory_fd in _walk(upper):
                lower_directory_fd = _open_below(lower_fd, directory)
                try:
                    _diff_directory(tar, directory, names + files, directory_fd, lower_directory_fd)
                finally:
                    if lower_directory_fd is not None:
                        os.close(lower_directory_fd)
    finally:
        os.close(lower_fd)
    return writer.result()


def _diff_directory(
    tar: _TarWriter,
    directory: str,
    entries: list[str],
    directory_fd: int,
    lower_directory_fd: int | None,
) -> None:
    lower_entries = set(os.listdir(lower_directory_fd)) if lower_directory_fd is not None else set()
    for leaf in sorted(lower_entries - set(entries)):
        tar.add_whiteout(f"{directory}/{leaf}" if directory else leaf)
    for leaf in sorted(entries):
        name = f"{directory}/{leaf}" if directory else leaf
        info = os.stat(leaf, dir_fd=directory_fd, follow_symlinks=False)
        lower_info = None
        if leaf in lower_entries and lower_directory_fd is not None:
            lower_info = os.stat(leaf, dir_fd=lower_directory_fd, follow_symlinks=False)
        change = _Change(name, leaf, directory_fd, info)
        if stat.S_ISDIR(info.st_mode):
            tar.note_directory(change)
        if lower_info is None or _differs(change, lower_info, lower_directory_fd):
            tar.add(change)


def _differs(change: _Change, lower: os.stat_result, lower_directory_fd: int | None) -> bool:
    info = change.info
    if (info.st_mode, info.st_uid, info.st_gid) != (lower.st_mode, lower.st_uid, lower.st_gid):
        return True
    if stat.S_ISDIR(info.st_mode):
        # A directory's mtime changes with every entry added or removed in it, and those
        # entries are written (or whited out) by themselves.
        return _xattrs(change.leaf, change.parent_fd) != _xattrs(change.leaf, lower_directory_fd)
    if (info.st_size, info.st_mtime_ns, info.st_rdev) != (
        lower.st_size,
        lower.st_mtime_ns,
        lower.st_rdev,
    ):
        return True
    if stat.S_ISLNK(info.st_mode):
        assert lower_directory_fd is not None
        return os.readlink(change.leaf, dir_fd=change.parent_fd) != os.readlink(
            change.leaf, dir_fd=lower_directory_fd
        )
    return _xattrs(change.leaf, change.parent_fd) != _xattrs(change.leaf, lower_directory_fd)


class _TarWriter:
    """Tar entries for changes, with their parent directories written first."""

    def __init__(self, out: _HashingWriter) -> None:
        self._tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]
        self._written_directories: set[str] = set()
        self._pending_parents: dict[str, _Change] = {}
        self._hard_links: dict[tuple[int, int], str] = {}

    def __enter__(self) -> _TarWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._tar.close()

    def note_directory(self, change: _Change) -> None:
        """Remember an unchanged directory, written only if a change below it needs it."""
        self._pending_parents[change.name] = change

    def add_whiteout(self, name: str) -> None:
        directory, _, leaf = name.rpartition("/")
        self._ensure_parents(name)
        self._add_empty(
            f"{directory}/{WHITEOUT_PREFIX}{leaf}" if directory else WHITEOUT_PREFIX + leaf
        )

    def add_opaque(self, name: str) -> None:
        self._add_empty(f"{name}/{OPAQUE_WHITEOUT}")

    def add(self, change: _Change) -> None:
        self._ensure_parents(change.name)
        mode = change.info.st_mode
        if stat.S_ISSOCK(mode):
            log.debug("diff: skipping socket %s", change.name)
            return
        member = _member(change)
        if stat.S_ISDIR(mode):
            self._written_directories.add(change.name)
            self._tar.addfile(member)
            return
        if stat.S_ISREG(mode) and change.info.st_nlink > 1:
            identity = (change.info.st_dev, change.info.st_ino)
            first = self._hard_links.setdefault(identity, change.name)
            if first != change.name:
                member.type, member.linkname, member.size = tarfile.LNKTYPE, first, 0
        if member.type != tarfile.REGTYPE:
            self._tar.addfile(member)
            return
        fd = os.open(change.leaf, _FILE_FLAGS, dir_fd=change.parent_fd)
        with os.fdopen(fd, "rb") as content:
            self._tar.addfile(member, content)

    def _ensure_parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in self._written_directories:
                continue
            pending = self._pending_parents.get(parent)
            if pending is None:
                raise SystemFailure(f"diff: parent directory {parent!r} of {name!r} was not seen")
            self._written_directories.add(parent)
            self._tar.addfile(_member(pending))

    def _add_empty(self, name: str) -> None:
        member = tarfile.TarInfo(name)
        member.type, member.mode, member.mtime = tarfile.REGTYPE, 0o644, 0
        self._tar.addfile(member)


def _member(change: _Change) -> tarfile.TarInfo:
    info = change.info
    member = tarfile.TarInfo(change.name)
    member.mode = stat.S_IMODE(info.st_mode)
    member.uid, member.gid = info.st_uid, info.st_gid
    member.mtime = info.st_mtime_ns // 1_000_000_000
    if stat.S_ISDIR(info.st_mode):
        member.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(info.st_mode):
        member.type = tarfile.SYMTYPE
        member.linkname = os.readlink(change.leaf, dir_fd=change.parent_fd)
    elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        member.type = tarfile.CHRTYPE if stat.S_ISCHR(info.st_mode) else tarfile.BLKTYPE
        member.devmajor, member.devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
    elif stat.S_ISFIFO(info.st_mode):
        member.type = tarfile.FIFOTYPE
    else:
        member.type, member.size = tarfile.REGTYPE, info.st_size
    if not stat.S_ISLNK(info.st_mode):
        for key, value in _xattrs(change.leaf, change.parent_fd).items():
            member.pax_headers[f"SCHILY.xattr.{key}"] = value.decode("utf-8", "surrogateescape")
    return member


def _walk(root: Path) -> Iterator[tuple[str, list[str], list[str], int]]:
    """Yield (directory relative to ``root``, subdirectories, other entries, fd), top down."""
    if not root.is_dir() or root.is_symlink():
        raise NotFound(f"cannot diff {root}: it is not a directory")
    for directory, names, files, directory_fd in os.fwalk(root, follow_symlinks=False):
        names.sort()  # fwalk descends in this list's order
        relative = os.path.relpath(directory, root)
        yield ("" if relative == "." else relative), names, files, directory_fd


def _open_root(path: Path) -> int:
    try:
        return os.open(path, _DIRECTORY_FLAGS)
    except OSError as error:
        raise NotFound(f"cannot diff against {path}: {error.strerror}") from None


def _open_below(root_fd: int, directory: str) -> int | None:
    """Open ``directory`` below ``root_fd`` without following symlinks; None if absent."""
    fd = os.dup(root_fd)
    for part in directory.split("/") if directory else []:
        try:
            next_fd = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = next_fd
    return fd


def _xattrs(leaf: str, parent_fd: int | None) -> dict[str, bytes]:
    if parent_fd is None:
        return {}
    # By path through the directory's fd, because opening a device node to read its
    # xattrs could have side effects; the final component is not followed.
    path = f"/proc/self/fd/{parent_fd}/{leaf}"
    try:
        names = os.listxattr(path, follow_symlinks=False)
        copied = sorted(name for name in names if not name.startswith("trusted."))
        return {name: os.getxattr(path, name, follow_symlinks=False) for name in copied}
    except OSError:
        return {}


def _is_overlay_whiteout(info: os.stat_result) -> bool:
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(0, 0)


def _is_opaque(leaf: str, parent_fd: int) -> bool:
    fd = os.open(leaf, _DIRECTORY_FLAGS, dir_fd=parent_fd)
    try:
        return os.getxattr(fd, OVERLAY_OPAQUE_XATTR) == b"y"
    except OSError:
        return False
    finally:
        os.close(fd)
