"""Snapshots: unpacked layers, one directory per chain ID, shared by every image that has it,
and the container root filesystems made from them.

:class:`Snapshotter` is the interface, with two implementations that pass one shared test
suite: ``OverlaySnapshotter`` (``ketch.images.overlay``), where each snapshot contains one
layer and overlayfs stacks them, and ``CopyingSnapshotter`` (``ketch.images.copying``),
where each snapshot is a full copy of its parent with its layer applied, for filesystems
where overlayfs does not work. :func:`open_snapshotter` picks one by name.

Vocabulary, by example. An image's config lists the layers' diff IDs, bottom first::

    diff IDs:   D1 (busybox files)    D2 (adds /app)
    chain IDs:  C1 = D1               C2 = sha256(C1 + " " + D2)

* **diff ID**: the digest of a layer's uncompressed tar. It names the layer's content
  alone, wherever the layer sits.
* **chain ID**: names a layer together with every layer below it. Two images share a
  snapshot only when their stacks agree from the bottom up to that layer, which is what
  makes sharing safe: the snapshot's whiteouts were written against that exact stack.
* **parent**: the chain ID of the snapshot directly below (None for the bottom layer).
  Following parents from a chain ID gives overlayfs its ``lowerdir`` list, top first.
* **key**: the name of an *active* snapshot, one still being written.

The life of a snapshot:

1. **prepare** ``(key, parent)``: the writer picks a unique key and gets a directory to
   unpack into. It is empty in the overlay snapshotter and a copy of the parent's files
   in the copying one. ``whiteout_form`` is the form ``unpack_layer`` must write::

      path = snapshots.prepare("extract-7f3a-<chain id>", parent=C1)
      unpack_layer(blob, path, whiteouts=snapshots.whiteout_form)   # in a worker thread

2. **commit** ``(key, chain ID)`` turns the active snapshot into a committed one, named by
   its chain ID. A committed snapshot is never written again. If another pull committed
   the same chain ID first, ``commit`` drops the new copy and returns the existing one::

      snapshots.commit("extract-7f3a-<chain id>", C2, diff_id=D2, size=n)

   ``abort(key)`` drops an active snapshot instead.
3. **view** ``(chain ID, target)`` mounts the files of a chain read-only at ``target``
   (whiteouts applied), for exports and inspection; ``unmount(target)`` ends it. A
   container gets a writable view: ``mount_container(container dir, chain ID)`` returns
   its rootfs, and ``diff_container`` writes what the container changed as a layer tar.
4. **remove** ``(chain ID)`` deletes a committed snapshot once no snapshot sits on it.

Active snapshots left by a crash, and directories with no row, are removed when the
snapshotter opens.

Layout::

    <root>/snapshotter   the name of the snapshotter that owns <root>/snapshots
    <root>/snapshots/
        <n>/fs        the snapshot's files (what they are depends on the snapshotter);
                      n is the snapshot's row number in image_snapshots
        trash-<n>     a removed snapshot being deleted
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ketch.errors import Conflict, InvalidArgument, NotFound, SystemFailure
from ketch.images.diff import LayerDiff
from ketch.images.layers import WhiteoutForm
from ketch.images.metadata import transaction
from ketch.linux import syscalls

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS image_snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('active', 'committed')),
    chain_id TEXT UNIQUE,
    parent TEXT,
    diff_id TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
)
"""

_COLUMNS = "id, key, state, chain_id, parent, diff_id, size, created"


@dataclass(frozen=True)
class Snapshot:
    id: int
    key: str
    state: str
    chain_id: str | None
    parent: str | None
    diff_id: str | None
    size: int
    created: str


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Return the chain ID of each layer, bottom first, from the layers' diff IDs."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
            continue
        joined = f"{chains[-1]} {diff_id}".encode()
        chains.append("sha256:" + hashlib.sha256(joined).hexdigest())
    return chains


class Snapshotter(abc.ABC):
    """Unpacked layers under ``<root>/snapshots``, recorded in the ``image_snapshots`` table.

    The table and directory bookkeeping are shared; subclasses decide what a snapshot's
    directory contains and how a chain becomes a root filesystem.
    """

    name: str
    whiteout_form: WhiteoutForm
    # True when a new snapshot starts as a copy of its parent's files, so the parent
    # must be committed before a layer can be unpacked on top of it.
    needs_parent_files: bool

    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.directory = root / "snapshots"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._check_kind(root / "snapshotter")
        self.db = db
        with transaction(db):
            db.execute(SCHEMA)
        self._remove_leftovers()

    def fs_path(self, snapshot: Snapshot) -> Path:
        return self.directory / str(snapshot.id) / "fs"

    def stat(self, chain_id: str) -> Snapshot | None:
        """Return the committed snapshot named ``chain_id``, or None."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM image_snapshots WHERE chain_id = ? AND state = 'committed'",
            (chain_id,),
        ).fetchone()
        return Snapshot(*row) if row else None

    def list(self) -> list[Snapshot]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM image_snapshots ORDER BY id")
        return [Snapshot(*row) for row in rows]

    def prepare(self, key: str, parent: str | None, *, parent_pending: bool = False) -> Path:
        """Make an active snapshot named ``key`` on top of ``parent``; return its fs dir.

        With ``parent_pending`` the parent may still be unpacking elsewhere, and ``commit``
        checks it instead. That lets layers unpack in parallel, and only a snapshotter
        whose ``needs_parent_files`` is False accepts it.
        """
        if parent_pending and self.needs_parent_files:
            raise InvalidArgument(
                f"the {self.name} snapshotter copies the parent's files into a new "
                "snapshot, so its parent must be committed first"
            )
        parent_snapshot = self.stat(parent) if parent is not None else None
        if parent is not None and parent_snapshot is None and not parent_pending:
            raise NotFound(f"parent snapshot {parent} not found")
        created = datetime.now(UTC).isoformat()
        try:
            with transaction(self.db) as db:
                cursor = db.execute(
                    "INSERT INTO image_snapshots (key, state, parent, created)"
                    " VALUES (?, 'active', ?, ?)",
                    (key, parent, created),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"snapshot key {key!r} is already in use") from None

        # The row is committed before the directory exists, so a crash between the two
        # leaves an active row that the next start removes, never an unrecorded directory
        # that a later snapshot with the same number would collide with.
        path = self.directory / str(cursor.lastrowid) / "fs"
        try:
            self._populate(path, parent_snapshot)
        except BaseException:
            self.abort(key)
            raise
        return path

    @abc.abstractmethod
    def _populate(self, path: Path, parent: Snapshot | None) -> None:
        """Create the directory ``path`` of a new active snapshot on top of ``parent``."""

    @abc.abstractmethod
    def view(self, chain_id: str, target: Path) -> Path:
        """Mount the files of ``chain_id`` read-only at the empty directory ``target``."""

    def unmount(self, target: Path) -> None:
        """Unmount a ``view``; does nothing when ``target`` is not a mount point."""
        unmount_path(target)

    @abc.abstractmethod
    def mount_container(self, container_dir: Path, chain_id: str | None) -> Path:
        """Make the writable rootfs of a container in ``container_dir`` from ``chain_id``
        (None for an image without layers) and return its path. Called again for the
        same directory, it returns the existing rootfs."""

    def unmount_container(self, container_dir: Path) -> None:
        """Unmount the rootfs ``mount_container`` made; the caller deletes the directory."""
        unmount_path(container_dir / "merged")

    @abc.abstractmethod
    def diff_container(self, container_dir: Path, chain_id: str | None, out: BinaryIO) -> LayerDiff:
        """Write what the container in ``container_dir`` changed on top of ``chain_id`` to
        ``out`` as an uncompressed layer tar."""

    def commit(self, key: str, chain_id: str, diff_id: str, size: int) -> Snapshot:
        """Turn the active snapshot ``key`` into the committed snapshot ``chain_id``."""
        active = self._active(key)
        existing = self.stat(chain_id)
        if existing is not None:
            log.debug("snapshot %s was committed meanwhile; dropping copy %s", chain_id, key)
            self.abort(key)
            return existing
        if active.parent is not None and self.stat(active.parent) is None:
            raise NotFound(
                f"parent snapshot {active.parent} of {chain_id} is not committed; "
                "commit the layers bottom first"
            )

        # The writer flushed the files (unpack_layer ends with syncfs, or the caller ran
        # sync() after unpacking), so the row that makes them visible is committed after
        # they are on disk.
        with transaction(self.db) as db:
            db.execute(
                "UPDATE image_snapshots SET state = 'committed', chain_id = ?, diff_id = ?,"
                " size = ? WHERE id = ?",
                (chain_id, diff_id, size, active.id),
            )
        committed = self.stat(chain_id)
        assert committed is not None
        return committed

    def sync(self) -> None:
        """Write the snapshots' filesystem to disk (one syncfs), for writers that unpacked
        with ``sync=False`` and have not committed yet."""
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            syscalls.syncfs(fd)
        except OSError as error:
            raise SystemFailure(
                f"cannot sync the filesystem of {self.directory}: {error}"
            ) from None
        finally:
            os.close(fd)

    def abort(self, key: str) -> None:
        """Remove the active snapshot ``key`` and its files; a missing key is ignored."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM image_snapshots WHERE key = ? AND state = 'active'",
            (key,),
        ).fetchone()
        if row is None:
            return
        self._delete(Snapshot(*row))

    def remove(self, chain_id: str) -> None:
        """Remove the committed snapshot ``chain_id``; Conflict if another one sits on it."""
        snapshot = self.stat(chain_id)
        if snapshot is None:
            return
        child = self.db.execute(
            "SELECT chain_id FROM image_snapshots WHERE parent = ? LIMIT 1", (chain_id,)
        ).fetchone()
        if child is not None:
            raise Conflict(f"snapshot {chain_id} is the parent of snapshot {child[0]}")
        self._delete(snapshot)

    def lowerdirs(self, chain_id: str) -> list[Path]:
        """Return the fs dirs of ``chain_id`` and its parents, top first."""
        paths: list[Path] = []
        current: str | None = chain_id
        while current is not None:
            snapshot = self.stat(current)
            if snapshot is None:
                raise NotFound(f"snapshot {current} not found (below {chain_id})")
            paths.append(self.fs_path(snapshot))
            current = snapshot.parent
        return paths

    def _check_kind(self, marker: Path) -> None:
        # The two kinds store different trees under the same layout, so a data root
        # stays with the snapshotter that first wrote to it.
        try:
            recorded = marker.read_text().strip()
        except FileNotFoundError:
            marker.write_text(self.name + "\n")
            return
        if recorded != self.name:
            raise InvalidArgument(
                f"the snapshots in {self.directory} were made by the {recorded!r} snapshotter, "
                f"not {self.name!r}: use {recorded!r} or a new data root"
            )

    def _active(self, key: str) -> Snapshot:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM image_snapshots WHERE key = ? AND state = 'active'",
            (key,),
        ).fetchone()
        if row is None:
            raise NotFound(f"active snapshot {key!r} not found")
        return Snapshot(*row)

    def _delete(self, snapshot: Snapshot) -> None:
        # Rename first, so the row and the visible directory go together. The slow
        # recursive delete then works on the renamed tree, never on a snapshot in use.
        directory = self.directory / str(snapshot.id)
        trash = self.directory / f"trash-{snapshot.id}"
        if directory.exists():
            os.rename(directory, trash)
        with transaction(self.db) as db:
            db.execute("DELETE FROM image_snapshots WHERE id = ?", (snapshot.id,))
        shutil.rmtree(trash, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        for row in self.db.execute(
            f"SELECT {_COLUMNS} FROM image_snapshots WHERE state = 'active'"
        ).fetchall():
            snapshot = Snapshot(*row)
            log.info("removing unfinished snapshot %s (key %s)", snapshot.id, snapshot.key)
            self._delete(snapshot)

        known = {str(row[0]) for row in self.db.execute("SELECT id FROM image_snapshots")}
        for entry in self.directory.iterdir():
            if entry.name in known:
                continue
            log.info("removing snapshot directory %s, which no snapshot record names", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def unmount_path(target: Path) -> None:
    """Detach the mount at ``target``; does nothing when it is not a mount point."""
    if not os.path.ismount(target):
        return
    try:
        # MNT_DETACH: a process still inside (a container being torn down) keeps the
        # mount busy, and detaching lets the directory go regardless.
        syscalls.umount(target, syscalls.MNT_DETACH | syscalls.UMOUNT_NOFOLLOW)
    except OSError as error:
        raise SystemFailure(f"cannot unmount {target}: {error}") from None
    if os.path.ismount(target):
        # Deleting the tree now would delete the image's files through the mount.
        raise SystemFailure(f"{target} is still mounted after unmounting it")


def bind_read_only(source: Path, target: Path) -> None:
    """Bind-mount the directory ``source`` read-only at ``target``."""
    try:
        syscalls.mount(source, target, None, syscalls.MS_BIND)
        # A bind mount ignores MS_RDONLY when it is made; a remount applies it.
        syscalls.mount(
            None, target, None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY
        )
    except OSError as error:
        if os.path.ismount(target):
            syscalls.umount(target, syscalls.MNT_DETACH)
        raise SystemFailure(f"cannot bind {source} read-only at {target}: {error}") from None


SNAPSHOTTER_NAMES = ("overlay", "copy")


def open_snapshotter(name: str, root: Path, db: sqlite3.Connection) -> Snapshotter:
    """Open the snapshotter ``name`` ("overlay" or "copy") under ``root``."""
    if name == "overlay":
        from ketch.images.overlay import OverlaySnapshotter

        return OverlaySnapshotter(root, db)
    if name == "copy":
        from ketch.images.copying import CopyingSnapshotter

        return CopyingSnapshotter(root, db)
    raise InvalidArgument(
        f"invalid snapshotter {name!r}: expected one of {', '.join(SNAPSHOTTER_NAMES)}"
    )
