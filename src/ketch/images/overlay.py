"""The overlay snapshotter: one directory per layer, stacked by overlayfs.

Layout (the shared part is in ``ketch.images.snapshots``)::

    <root>/snapshots/<n>/fs      one layer's files, whiteouts in overlayfs form
    <container dir>/
        upper/     the container's writable layer (overlayfs upperdir)
        work/      overlayfs's scratch directory (workdir), on the same filesystem as upper
        merged/    the mount point, the container's rootfs
        empty/     an empty lower directory, only for an image without layers

mount(2) copies at most one page of option data, so the ``lowerdir`` list of a deep image
with a long data-root path does not fit. Then the layers go one by one, as ``lowerdir+``
options of the new mount API (fsopen and fsconfig, Linux 6.8 and later), which has no
such limit. On older kernels every directory is opened and named as ``/proc/self/fd/<fd>``
instead: the kernel resolves each name when the mount is made, in this process, and keeps
the directory, not the name. That costs about 19 bytes per layer, so about 200 layers fit
in a 4 KiB page. overlayfs itself stacks at most 500 (``OVL_MAX_STACK`` in Linux's
fs/overlayfs).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ketch.errors import SystemFailure
from ketch.images.diff import LayerDiff, diff_overlay_upper
from ketch.images.layers import WhiteoutForm
from ketch.images.snapshots import Snapshot, Snapshotter, bind_read_only
from ketch.linux import syscalls

log = logging.getLogger(__name__)

# mount(2) copies at most one page of option data; 4096 bytes is the page size on x86-64
# and the usual one on arm64.
MAX_MOUNT_DATA = 4095
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# A writable mount turns these off whatever the kernel's defaults: a redirected directory
# or a metadata-only copy-up in the upper directory would make its diff wrong, because
# the diff reads the upper directory as the complete change set.
_WRITABLE_OPTIONS = (("redirect_dir", "off"), ("metacopy", "off"))


class OverlaySnapshotter(Snapshotter):
    """Snapshots that each hold one layer, with overlayfs whiteouts."""

    name = "overlay"
    whiteout_form = WhiteoutForm.OVERLAY
    needs_parent_files = False

    def _populate(self, path: Path, parent: Snapshot | None) -> None:
        path.mkdir(parents=True, mode=0o755)

    def view(self, chain_id: str, target: Path) -> Path:
        lowerdirs = self.lowerdirs(chain_id)
        if len(lowerdirs) == 1:
            # overlayfs needs two lower directories when it has no upper one.
            bind_read_only(lowerdirs[0], target)
        else:
            mount_overlay(target, lowerdirs, flags=syscalls.MS_RDONLY)
        return target

    def mount_container(self, container_dir: Path, chain_id: str | None) -> Path:
        upper, work, merged = (container_dir / name for name in ("upper", "work", "merged"))
        if os.path.ismount(merged):
            return merged
        for directory in (upper, work, merged):
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)

        lowerdirs = self.lowerdirs(chain_id) if chain_id else []
        if not lowerdirs:
            empty = container_dir / "empty"
            empty.mkdir(exist_ok=True, mode=0o755)
            lowerdirs = [empty]
        mount_overlay(merged, lowerdirs, upper=upper, work=work)
        return merged

    def diff_container(self, container_dir: Path, chain_id: str | None, out: BinaryIO) -> LayerDiff:
        return diff_overlay_upper(container_dir / "upper", out)


def mount_overlay(
    target: Path,
    lowerdirs: list[Path],
    *,
    upper: Path | None = None,
    work: Path | None = None,
    flags: int = 0,
) -> None:
    """Mount overlayfs at ``target`` with ``lowerdirs`` (top first) and, for a writable
    mount, ``upper`` and ``work``. The directories are named by file descriptor when
    their paths do not fit in the options."""
    with contextlib.ExitStack() as stack:
        options = _overlay_options(lowerdirs, upper, work, str)
        if len(options) > MAX_MOUNT_DATA or _has_separator(lowerdirs, upper, work):
            if _mount_layer_by_layer(target, lowerdirs, upper, work, flags):
                return
            options = _overlay_options(
                lowerdirs, upper, work, lambda path: stack.enter_context(_fd_path(path))
            )
            log.debug("mounting %d layers at %s by file descriptor", len(lowerdirs), target)
        if len(options) > MAX_MOUNT_DATA:
            # Limitation: before Linux 6.8, past about 200 layers even the short names
            # exceed one page.
            raise SystemFailure(
                f"cannot mount overlayfs at {target}: {len(lowerdirs)} layers make "
                f"{len(options)} bytes of mount options, more than {MAX_MOUNT_DATA}"
            )
        try:
            syscalls.mount("overlay", target, "overlay", flags, options)
        except OSError as error:
            raise SystemFailure(f"cannot mount overlayfs at {target}: {error}") from None


def _mount_layer_by_layer(
    target: Path, lowerdirs: list[Path], upper: Path | None, work: Path | None, flags: int
) -> bool:
    """Mount with one ``lowerdir+`` option per layer; False when the kernel has no
    ``lowerdir+`` (before Linux 6.8), so that the caller falls back."""
    try:
        fs_fd = syscalls.fsopen("overlay")
    except OSError as error:
        log.debug("fsopen is not available (%s); mounting overlayfs with mount(2)", error)
        return False
    try:
        try:
            _configure_layers(fs_fd, lowerdirs, upper, work)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            # An overlayfs without lowerdir+ rejects the key when it is set or, through
            # the kernel's conversion for old mount options, when the context is created.
            log.debug("overlayfs rejected lowerdir+ (%s); naming layers by fd instead", error)
            return False
        attributes = syscalls.MOUNT_ATTR_RDONLY if flags & syscalls.MS_RDONLY else 0
        mount_fd = syscalls.fsmount(fs_fd, attributes)
        try:
            syscalls.move_mount_to(mount_fd, target)
        finally:
            os.close(mount_fd)
    except OSError as error:
        raise SystemFailure(
            f"cannot mount overlayfs with {len(lowerdirs)} layers at {target}: {error}"
        ) from None
    finally:
        os.close(fs_fd)
    log.debug("mounted %d layers at %s layer by layer", len(lowerdirs), target)
    return True


def _configure_layers(
    fs_fd: int, lowerdirs: list[Path], upper: Path | None, work: Path | None
) -> None:
    # fsconfig copies at most 256 bytes of a string value, so every directory is named
    # by a /proc/self/fd path, as in the mount(2) fallback.
    with contextlib.ExitStack() as stack:
        for path in lowerdirs:
            syscalls.fsconfig_string(fs_fd, "lowerdir+", stack.enter_context(_fd_path(path)))
        if upper is not None and work is not None:
            syscalls.fsconfig_string(fs_fd, "upperdir", stack.enter_context(_fd_path(upper)))
            syscalls.fsconfig_string(fs_fd, "workdir", stack.enter_context(_fd_path(work)))
            for key, value in _WRITABLE_OPTIONS:
                syscalls.fsconfig_string(fs_fd, key, value)
        syscalls.fsconfig_create(fs_fd)


def _overlay_options(
    lowerdirs: list[Path], upper: Path | None, work: Path | None, name_of: Callable[[Path], str]
) -> str:
    options = "lowerdir=" + ":".join(name_of(path) for path in lowerdirs)
    if upper is not None and work is not None:
        options += f",upperdir={name_of(upper)},workdir={name_of(work)}"
        options += "".join(f",{key}={value}" for key, value in _WRITABLE_OPTIONS)
    return options


def _has_separator(lowerdirs: list[Path], upper: Path | None, work: Path | None) -> bool:
    # overlayfs splits its options at ',' and lowerdir at ':', so a path with either one
    # cannot be named directly.
    paths = [str(path) for path in [*lowerdirs, upper, work] if path is not None]
    return any("," in path or ":" in path for path in paths)


@contextlib.contextmanager
def _fd_path(path: Path) -> Iterator[str]:
    fd = os.open(path, _DIRECTORY_FLAGS)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
