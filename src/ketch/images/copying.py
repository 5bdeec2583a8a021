"""The copying snapshotter: each snapshot is a full copy of its parent with its layer
applied, for data roots where overlayfs does not work (an overlayfs or some network
filesystems below the data root).

It costs a copy of the image per layer and per container, so the overlay snapshotter is
the default. ``cp -a --reflink=auto`` does the copying, so a filesystem with reflinks
(btrfs, XFS) shares the data blocks.

Layout (the shared part is in ``ketch.images.snapshots``)::

    <root>/snapshots/<n>/fs      the complete tree of the chain up to this layer
    <container dir>/
        merged/       the container's rootfs, a copy of its image's top snapshot
        merged.tmp/   that copy while it is being made
        empty/        the tree an image without layers is compared with, for a diff
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

from ketch.errors import NotFound, SystemFailure
from ketch.images.diff import LayerDiff, diff_trees
from ketch.images.layers import WhiteoutForm
from ketch.images.snapshots import Snapshot, Snapshotter, bind_read_only

log = logging.getLogger(__name__)


class CopyingSnapshotter(Snapshotter):
    """Snapshots that each hold the full tree of their chain, whiteouts applied."""

    name = "copy"
    whiteout_form = WhiteoutForm.APPLY
    needs_parent_files = True

    def _populate(self, path: Path, parent: Snapshot | None) -> None:
        if parent is None:
            path.mkdir(parents=True, mode=0o755)
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        copy_tree(self.fs_path(parent), path)

    def view(self, chain_id: str, target: Path) -> Path:
        snapshot = self._committed(chain_id)
        bind_read_only(self.fs_path(snapshot), target)
        return target

    def mount_container(self, container_dir: Path, chain_id: str | None) -> Path:
        merged = container_dir / "merged"
        if merged.is_dir():
            return merged
        container_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        if chain_id is None:
            merged.mkdir(mode=0o755)
            return merged

        # Copied under a temporary name and renamed, so that a crash mid-copy never
        # leaves a partial rootfs that a second call would take for a finished one.
        partial = container_dir / "merged.tmp"
        shutil.rmtree(partial, ignore_errors=True)
        copy_tree(self.fs_path(self._committed(chain_id)), partial)
        partial.rename(merged)
        return merged

    def diff_container(self, container_dir: Path, chain_id: str | None, out: BinaryIO) -> LayerDiff:
        if chain_id is None:
            lower = container_dir / "empty"
            lower.mkdir(exist_ok=True, mode=0o755)
        else:
            lower = self.fs_path(self._committed(chain_id))
        return diff_trees(lower, container_dir / "merged", out)

    def _committed(self, chain_id: str) -> Snapshot:
        snapshot = self.stat(chain_id)
        if snapshot is None:
            raise NotFound(f"snapshot {chain_id} not found")
        return snapshot


def copy_tree(source: Path, destination: Path) -> None:
    """Copy the directory ``source`` to the new path ``destination``, keeping owners,
    modes, times, xattrs, hard links, device nodes and symlinks as they are."""
    try:
        subprocess.run(
            ["cp", "-a", "--reflink=auto", "--no-target-directory", str(source), str(destination)],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as error:
        raise SystemFailure(
            f"cannot copy {source} to {destination}: {error.stderr.strip()}"
        ) from None
