"""Writing a layer's tar entries into a snapshot directory, safely.

A layer comes from a registry and is hostile until proven otherwise. Every entry is
written through directory file descriptors opened one component at a time with
``O_NOFOLLOW``, starting from the snapshot's own directory, so that:

* a name with a ``..`` component or a leading ``/`` is rejected before anything happens;
* a symlink that the layer itself planted is never followed, so a later entry cannot write
  through it (``link -> /etc`` then ``link/passwd``): a symlink where a parent directory
  should be is rejected;
* a hard link's target is resolved the same way and must already be in this layer, so a
  hard link cannot reach a file outside the snapshot;
* a whiteout may name only an entry in its own directory (``.wh...`` would name the parent).

Python's ``tarfile`` parses the archive; its extraction code and filters are not used.

Whiteouts take one of two forms (:class:`WhiteoutForm`):

* ``OVERLAY``: each layer has a directory of its own, and whiteouts become what overlayfs
  understands: ``dir/.wh.NAME`` becomes a 0/0 character device ``dir/NAME``, and
  ``dir/.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on ``dir``.
* ``APPLY``: the directory already contains a copy of the layers below (the copying
  snapshotter), and whiteouts delete from it. A symlink or file that a lower layer left
  where this layer has a directory is replaced by a directory, as the overlayfs mount of
  the same layers shows it. Such a symlink or file that this layer itself planted is
  rejected.

Ownership, modes, modification times, device nodes and extended attributes are kept;
directory metadata is applied last, so that writing the children does not change it.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketch.errors import InvalidArgument, SystemFailure
from ketch.images.writeback import start_writeback

if TYPE_CHECKING:
    from ketch.images.layer_stream import TarStream

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

CHUNK_SIZE = 1024 * 1024
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Extended attributes a layer may set. trusted.* is excluded above all because
# trusted.overlay.* would let a layer forge opaque directories or redirects in the mount.
_ALLOWED_XATTR_PREFIXES = ("user.", "security.", "system.posix_acl_")
# Files of at least this size start going to disk as soon as they are written, so the
# syncfs before the snapshot is committed waits for less. Smaller files are left to that
# syncfs, because starting each one early measured no faster on the thousands of small
# files of the Debian base layer.
EARLY_WRITEBACK_MIN_BYTES = 256 * 1024
# Errors that come from the host's disk, not from the layer's content.
_HOST_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


class WhiteoutForm(enum.Enum):
    """The form whiteouts take in an unpacked layer (see the module docstring)."""

    OVERLAY = "overlay"
    APPLY = "apply"


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on one layer, so that a small blob cannot fill the disk or the inode table.

    ``max_bytes`` bounds both the uncompressed tar stream and the file content written
    (which differ for sparse files); ``max_entries`` bounds the tar entries. The defaults
    are far above ordinary images; lower them for registries that are not trusted.
    """

    max_bytes: int = 64 * 1024**3
    max_entries: int = 2_000_000


DEFAULT_LIMITS = UnpackLimits()


class LayerRejected(InvalidArgument):
    """A layer entry would escape the snapshot or is malformed; the message names both."""


class LimitExceeded(Exception):
    """Raised inside the stream readers; unpack_layer turns it into LayerRejected."""


def split_entry_path(name: str) -> list[str]:
    """Split a tar entry name into components; [] is the layer root.

    Raises ValueError naming the problem for an absolute name, a ``..`` component or a
    NUL byte.
    """
    if "\0" in name:
        raise ValueError("the name contains a NUL byte")
    if name.startswith("/"):
        raise ValueError("absolute paths are not allowed in a layer")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("'..' would lead outside the layer")
    return parts


class EntryWriter:
    """The writer of one tar stream's entries below ``root_fd``."""

    def __init__(
        self, root_fd: int, layer: str, whiteouts: WhiteoutForm, limits: UnpackLimits
    ) -> None:
        self.root_fd = root_fd
        self.layer = layer
        self.whiteouts = whiteouts
        self.limits = limits
        self.size = 0
        self.is_root = os.geteuid() == 0
        self._directories: list[tuple[list[str], tarfile.TarInfo]] = []
        # Paths this layer wrote, tracked in APPLY form only, where everything else in the
        # destination came from the layers below.
        self._written: set[tuple[str, ...]] = set()

    def unpack(self, stream: TarStream, on_entry: Callable[[], object]) -> None:
        entries = 0
        # TarFile reads the stream in order: it seeks only forward, to the next header.
        with tarfile.TarFile(fileobj=stream, mode="r") as archive:  # type: ignore[arg-type]
            for member in archive:
                entries += 1
                if entries > self.limits.max_entries:
                    raise LimitExceeded(f"more than {self.limits.max_entries} entries")
                self._apply(archive, member)
                on_entry()
        self._apply_directory_metadata()

    def _record_written(self, parts: list[str] | tuple[str, ...]) -> None:
        if self.whiteouts is WhiteoutForm.APPLY:
            self._written.add(tuple(parts))

    def _reject(self, member: tarfile.TarInfo, reason: str) -> LayerRejected:
        return LayerRejected(f"layer {self.layer}: entry {member.name!r}: {reason}")

    def _apply(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        try:
            parts = split_entry_path(member.name)
        except ValueError as error:
            raise self._reject(member, str(error)) from None
        if not parts:
            if member.isdir():
                self._directories.append((parts, member))
                return
            raise self._reject(member, "only a directory entry may name the layer root")

        parent_fd = self._open_parent(parts, member, create=True)
        try:
            self._apply_in(archive, member, parts, parent_fd)
            if not parts[-1].startswith(WHITEOUT_PREFIX):
                self._record_written(parts)
        except OSError as error:
            if error.errno in _HOST_ERRNOS:
                raise SystemFailure(
                    f"layer {self.layer}: cannot write entry {member.name!r}: {error.strerror}"
                ) from None
            raise self._reject(member, f"cannot unpack: {error.strerror or error}") from None
        finally:
            os.close(parent_fd)

    def _apply_in(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str], parent_fd: int
    ) -> None:
        leaf = parts[-1]
        if leaf.startswith(WHITEOUT_PREFIX):
            self._apply_whiteout(member, parts, parent_fd)
            return

        self._clear_for(leaf, parent_fd, keep_directory=member.isdir())
        if member.isdir():
            if not _exists(leaf, parent_fd):
                os.mkdir(leaf, 0o700, dir_fd=parent_fd)
            self._directories.append((parts, member))
        elif member.isreg():
            self._write_file(archive, member, leaf, parent_fd)
        elif member.issym():
            os.symlink(member.linkname, leaf, dir_fd=parent_fd)
            self._set_owner(leaf, parent_fd, member)
            os.utime(leaf, ns=_mtime_ns(member), dir_fd=parent_fd, follow_symlinks=False)
        elif member.islnk():
            self._link(member, leaf, parent_fd)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._make_node(member, leaf, parent_fd)
        else:
            raise self._reject(member, f"unsupported tar entry type {member.type!r}")

    def _apply_whiteout(self, member: tarfile.TarInfo, parts: list[str], parent_fd: int) -> None:
        leaf = parts[-1]
        if leaf == OPAQUE_WHITEOUT:
            if self.whiteouts is WhiteoutForm.APPLY:
                self._clear_lower_children(parts[:-1], parent_fd)
            else:
                os.setxattr(parent_fd, OVERLAY_OPAQUE_XATTR, b"y")
            return
        if leaf.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            # Other .wh..wh. names are aufs bookkeeping with no meaning for overlayfs.
            log.debug("layer %s: skipping aufs metadata entry %s", self.layer, member.name)
            return
        target = leaf.removeprefix(WHITEOUT_PREFIX)
        if target in ("", ".", ".."):
            raise self._reject(member, "a whiteout must name an entry in its own directory")
        self._clear_for(target, parent_fd, keep_directory=False)
        if self.whiteouts is WhiteoutForm.OVERLAY:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent_fd)
            self._set_owner(target, parent_fd, member)

    def _clear_lower_children(self, directory: list[str], directory_fd: int) -> None:
        # An opaque directory hides what the layers below put in it, but keeps what this
        # layer already wrote there (a tar may list the marker after its siblings).
        for name in os.listdir(directory_fd):
            if (*directory, name) not in self._written:
                self._clear_for(name, directory_fd, keep_directory=False)

    def _clear_for(self, name: str, parent_fd: int, keep_directory: bool) -> None:
        # A later entry replaces an earlier one of the same name, as tar extraction does.
        try:
            existing = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(existing.st_mode):
            if not keep_directory:
                shutil.rmtree(name, dir_fd=parent_fd)
            return
        os.unlink(name, dir_fd=parent_fd)

    def _write_file(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, leaf: str, parent_fd: int
    ) -> None:
        if self.size + member.size > self.limits.max_bytes:
            raise LimitExceeded(f"more than {self.limits.max_bytes} bytes of file content")
        fd = os.open(leaf, _NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)
        try:
            self._write_content(archive, member, fd)
            if member.size >= EARLY_WRITEBACK_MIN_BYTES:
                start_writeback(fd)
            if self.is_root:
                os.fchown(fd, member.uid, member.gid)
            self._set_xattrs(fd, member)
            # chmod after chown: chown clears the set-user-ID and set-group-ID bits.
            os.fchmod(fd, member.mode & 0o7777)
            os.utime(fd, ns=_mtime_ns(member))
        finally:
            os.close(fd)
        self.size += member.size

    @staticmethod
    def _write_content(archive: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> None:
        stream: TarStream = archive.fileobj  # type: ignore[assignment]
        if member.issparse():
            # tarfile's member reader fills the holes of a sparse file with zeros.
            source = archive.extractfile(member)
            assert source is not None
            while chunk := source.read(CHUNK_SIZE):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            return
        stream.seek(member.offset_data)
        stream.copy_to(fd, member.size)
        # Skip the padding up to the next header, so that TarFile does not seek back to
        # check the last byte of this member's last block.
        stream.seek(archive.offset)

    def _link(self, member: tarfile.TarInfo, leaf: str, parent_fd: int) -> None:
        try:
            target_parts = split_entry_path(member.linkname)
        except ValueError as error:
            raise self._reject(member, f"hard link target {member.linkname!r}: {error}") from None
        if not target_parts:
            raise self._reject(member, "a hard link cannot point at the layer root")
        if self.whiteouts is WhiteoutForm.APPLY and tuple(target_parts) not in self._written:
            # The same rule as in OVERLAY form, where only this layer's files are there.
            raise self._reject(member, f"hard link target {member.linkname!r} is not in this layer")

        target_parent_fd = self._open_parent(target_parts, member, create=False)
        try:
            os.link(
                target_parts[-1],
                leaf,
                src_dir_fd=target_parent_fd,
                dst_dir_fd=parent_fd,
                follow_symlinks=False,
            )
        except FileNotFoundError:
            raise self._reject(
                member, f"hard link target {member.linkname!r} is not in this layer"
            ) from None
        finally:
            os.close(target_parent_fd)

    def _make_node(self, member: tarfile.TarInfo, leaf: str, parent_fd: int) -> None:
        if member.ischr():
            kind = stat.S_IFCHR
        elif member.isblk():
            kind = stat.S_IFBLK
        else:
            kind = stat.S_IFIFO
        device = os.makedev(member.devmajor, member.devminor) if kind != stat.S_IFIFO else 0
        os.mknod(leaf, kind | 0o600, device, dir_fd=parent_fd)
        self._set_owner(leaf, parent_fd, member)
        # The node was made a line above in a directory only this process writes, so
        # following the name here cannot reach anything else.
        os.chmod(leaf, member.mode & 0o7777, dir_fd=parent_fd)
        os.utime(leaf, ns=_mtime_ns(member), dir_fd=parent_fd, follow_symlinks=False)

    def _open_parent(self, parts: list[str], member: tarfile.TarInfo, create: bool) -> int:
        """Open the directory that contains ``parts[-1]``, one component at a time.

        Missing directories are made (mode 0755) when ``create`` is true. A component that
        is a symlink or not a directory is rejected, because following it could lead out
        of the layer. In APPLY form, one that came from a lower layer is replaced by a
        directory instead, as the overlayfs mount of the same layers shows it.
        """
        fd = os.dup(self.root_fd)
        for depth, part in enumerate(parts[:-1]):
            prefix = parts[: depth + 1]
            try:
                if create and self._is_lower_non_directory(prefix, part, fd):
                    os.unlink(part, dir_fd=fd)
                created_directory = (
                    self.whiteouts is WhiteoutForm.APPLY and create and not _exists(part, fd)
                )
                next_fd = self._open_directory(part, fd, create)
            except OSError as error:
                where = "/".join(parts[: depth + 1])
                reason = _describe_parent_error(where, part, fd, error)
                os.close(fd)
                raise self._reject(member, reason) from None
            os.close(fd)
            fd = next_fd
            if created_directory:
                self._record_written(prefix)
        return fd

    def _is_lower_non_directory(self, prefix: list[str], name: str, parent_fd: int) -> bool:
        if self.whiteouts is not WhiteoutForm.APPLY or tuple(prefix) in self._written:
            return False
        try:
            mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        return not stat.S_ISDIR(mode)

    @staticmethod
    def _open_directory(name: str, parent_fd: int, create: bool) -> int:
        try:
            return os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
        os.mkdir(name, 0o755, dir_fd=parent_fd)
        return os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)

    def _set_owner(self, name: str, parent_fd: int, member: tarfile.TarInfo) -> None:
        # Limitation: without root, files keep the unpacking user as owner; rootless
        # operation needs the layer's IDs mapped through a user namespace.
        if self.is_root:
            os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)

    def _set_xattrs(self, fd: int, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key.removeprefix("SCHILY.xattr.")
            if not name.startswith(_ALLOWED_XATTR_PREFIXES):
                log.warning("layer %s: %s: skipping xattr %s", self.layer, member.name, name)
                continue
            try:
                os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
            except OSError as error:
                log.warning(
                    "layer %s: %s: cannot set xattr %s: %s",
                    self.layer, member.name, name, error.strerror,
                )  # fmt: skip

    def _apply_directory_metadata(self) -> None:
        # Deepest first, so that setting a directory's mtime is not undone by a child.
        for parts, member in sorted(self._directories, key=lambda item: -len(item[0])):
            try:
                fd = self._open_existing(parts)
            except OSError:
                continue  # a later entry replaced or removed the directory
            try:
                if self.is_root:
                    os.fchown(fd, member.uid, member.gid)
                self._set_xattrs(fd, member)
                os.fchmod(fd, member.mode & 0o7777)
                os.utime(fd, ns=_mtime_ns(member))
            finally:
                os.close(fd)

    def _open_existing(self, parts: list[str]) -> int:
        fd = os.dup(self.root_fd)
        for part in parts:
            try:
                next_fd = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
            fd = next_fd
        return fd


def _exists(name: str, parent_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _describe_parent_error(where: str, name: str, parent_fd: int, error: OSError) -> str:
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            is_symlink = stat.S_ISLNK(
                os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            )
        except OSError:
            is_symlink = False
        if is_symlink:
            return f"{where!r} is a symlink; writing through it could leave the layer"
        return f"{where!r} is not a directory"
    if error.errno == errno.ENOENT:
        return f"{where!r} does not exist in this layer"
    return f"cannot open {where!r}: {error.strerror}"


def _mtime_ns(member: tarfile.TarInfo) -> tuple[int, int]:
    mtime = int(member.mtime * 1_000_000_000)
    return (mtime, mtime)
