"""The content store: blobs (layers, configs, manifests, indexes) named by their digest.

Vocabulary, by example. Pulling busybox stores four kinds of blob:

* **digest**: ``sha256:<hex>`` of a blob's bytes exactly as the registry serves them. A
  blob is stored under its digest, so its name proves its content.
* **blob**: the bytes themselves. The manifest and the index are small JSON blobs, the
  config is one too, and each layer is a (usually gzip-compressed) tar.
* **diff ID**: the digest of a layer's *uncompressed* tar. The config lists the diff IDs
  and the manifest lists the compressed digests, so one layer has both names. The content
  store names blobs by digest only, and the snapshots contain what the diff IDs name.

A writer walks through the steps that make a blob appear atomically::

    with store.writer("sha256:ab12...", size=1234) as writer:
        async for chunk in response:
            writer.write(chunk)      # hashed and counted as it arrives
        writer.commit()              # size and digest checked, fsynced, renamed

A blob whose bytes do not match its digest is never stored, and a crash at any instant
leaves the blob either absent or complete. Leftovers in ``ingest/`` are removed when the
store opens, except partial downloads, which a later pull of the same blob resumes
(those go after a week untouched).

Layout::

    <root>/
        blobs/sha256/<hex>     one file per blob, read-only once committed
        ingest/<random>        blobs being written; renamed into blobs/ on commit
        ingest/partial-<hex>   resumable downloads of sha256:<hex>, kept when interrupted
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from pathlib import Path
from types import TracebackType

from ketch.errors import InvalidArgument, NotFound, SystemFailure
from ketch.images.reference import validate_digest
from ketch.images.writeback import start_writeback

log = logging.getLogger(__name__)

# A partial download untouched this long is removed when the store opens, because a pull
# that resumes it is unlikely by then and it takes disk space.
PARTIAL_MAX_AGE_SECONDS = 7 * 24 * 3600
# A blob being written starts going to disk every this many bytes, so that the fsync in
# commit waits for the last few MiB only instead of the whole blob.
WRITEBACK_STEP_BYTES = 8 * 1024 * 1024
_HASH_READ_SIZE = 1024 * 1024


class DeferredHash:
    """The sha256 of a blob's first bytes, computed by the thread that reads them from the
    download (the layer's unpack) instead of by the writer on the event loop.

    The reader passes each chunk with its offset in the blob. The writer's commit stops the
    hashing and reads the bytes the reader had not reached back from the file to hash them,
    so a reader that falls behind or stops early never delays the commit.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._count = 0
        self._stopped = False
        # Held while a chunk is hashed, so stop() never returns in the middle of one.
        self._lock = threading.Lock()

    def update(self, data: bytes, offset: int) -> None:
        """Hash ``data``, found at ``offset`` in the blob, if it continues the hashed bytes."""
        with self._lock:
            if not self._stopped and offset == self._count:
                self._hash.update(data)
                self._count += len(data)

    def stop(self) -> tuple[hashlib._Hash, int]:
        """End the hashing and return the hash with the count of leading bytes it covers."""
        with self._lock:
            self._stopped = True
            return self._hash, self._count


class BlobWriter:
    """Streams one blob into ``ingest/`` and moves it into ``blobs/`` once it verifies.

    A resumable writer appends to ``ingest/partial-<hex>``, which it locks with flock,
    and starts with the bytes an earlier, interrupted writer left there. Aborting it keeps
    those bytes for the next attempt, unless they proved wrong (too long, or a digest
    that does not match), which discards them.
    """

    def __init__(
        self, store: ContentStore, digest: str, size: int | None, *, resumable: bool = False
    ) -> None:
        self._store = store
        self.digest = validate_digest(digest)
        self.expected_size = size
        self.written = 0
        self._hash = hashlib.sha256()
        self.resumable = resumable
        self.committed = False
        self._keep_partial = resumable
        self._writeback_from = 0
        self._deferred: DeferredHash | None = None
        if resumable:
            self._temp_path = store.partial_path(self.digest)
            self._fd: int | None = _open_locked(self._temp_path)
            self._hash_existing()
        else:
            self._temp_path = store.ingest_dir / secrets.token_hex(16)
            # Readable too, for the commit that hashes what a DeferredHash did not reach.
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(self._temp_path, flags, 0o644)

    def write(self, data: bytes) -> None:
        """Append ``data``; raises InvalidArgument as soon as the blob exceeds its size."""
        if self._fd is None:
            raise ValueError(f"writer for blob {self.digest} is closed")
        if self.expected_size is not None and self.written + len(data) > self.expected_size:
            self._keep_partial = False
            raise InvalidArgument(
                f"blob {self.digest} is longer than the {self.expected_size} bytes expected"
            )
        if self._deferred is None:
            self._hash.update(data)
        view = memoryview(data)
        while view:
            count = os.write(self._fd, view)
            view = view[count:]
        self.written += len(data)
        if self.written - self._writeback_from >= WRITEBACK_STEP_BYTES:
            start_writeback(self._fd, self._writeback_from, self.written - self._writeback_from)
            self._writeback_from = self.written

    def defer_hash(self) -> DeferredHash:
        """Leave the hashing of the bytes written from now on to the reader of a
        DeferredHash, until commit. Only for a writer that has written nothing yet."""
        if self.written or self._deferred is not None:
            raise ValueError(
                f"writer for blob {self.digest} cannot defer its hash after writing or twice"
            )
        self._deferred = DeferredHash()
        return self._deferred

    def restart(self) -> None:
        """Drop what was written so far and start again from byte 0, hashing inline."""
        if self._fd is None:
            raise ValueError(f"writer for blob {self.digest} is closed")
        if self._deferred is not None:
            self._deferred.stop()
            self._deferred = None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._writeback_from = 0
        self._hash = hashlib.sha256()
        self.written = 0
        self._keep_partial = self.resumable

    def commit(self) -> Path:
        """Verify size and digest, fsync and rename the blob into place; return its path."""
        if self._fd is None:
            raise ValueError(f"writer for blob {self.digest} is closed")
        if self.expected_size is not None and self.written != self.expected_size:
            self._keep_partial = False
            raise InvalidArgument(
                f"blob {self.digest} is {self.written} bytes, expected {self.expected_size}"
            )
        if self._deferred is not None:
            self._take_over_hash(self._deferred)
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            self._keep_partial = False
            raise InvalidArgument(
                f"blob content does not match its digest: expected {self.digest}, got {actual}"
            )

        os.fsync(self._fd)
        target = self._store.path(self.digest)
        # Renamed while still open, so the flock of a resumable writer covers the rename.
        os.rename(self._temp_path, target)
        os.close(self._fd)
        self._fd = None
        self._store.fsync_blob_dir()
        self.committed = True
        return target

    def abort(self) -> None:
        """Drop the partial blob, or keep it to resume; safe to call more than once."""
        if not self.committed and (not self._keep_partial or self.written == 0):
            self._temp_path.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _take_over_hash(self, deferred: DeferredHash) -> None:
        """Stop the deferred hashing and hash the rest of the blob from the file."""
        assert self._fd is not None
        self._hash, offset = deferred.stop()
        self._deferred = None
        log.debug("blob %s: its reader hashed %d of %d bytes, the commit hashes the rest",
                  self.digest, offset, self.written)  # fmt: skip
        while offset < self.written:
            chunk = os.pread(self._fd, min(_HASH_READ_SIZE, self.written - offset), offset)
            if not chunk:
                raise SystemFailure(f"blob {self.digest} is shorter on disk than written")
            self._hash.update(chunk)
            offset += len(chunk)

    def _hash_existing(self) -> None:
        assert self._fd is not None
        while chunk := os.read(self._fd, _HASH_READ_SIZE):
            self._hash.update(chunk)
            self.written += len(chunk)
        if self.expected_size is not None and self.written > self.expected_size:
            log.info("discarding partial blob %s: longer than expected", self.digest)
            self.restart()
        elif self.written:
            log.info("resuming blob %s at byte %d", self.digest, self.written)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()


def _open_locked(path: Path) -> int:
    """Open (or create) ``path`` for appending and take an exclusive flock on it.

    Raises BlockingIOError when another writer has locked it. A file that
    ContentStore.discard_partial unlinked between the open and the lock is opened again,
    because a commit renames from the path and would not find it.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _is_linked_at(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _is_linked_at(fd: int, path: Path) -> bool:
    """Return whether ``path`` still names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


class ContentStore:
    """Blobs under ``<root>/blobs/sha256``, each written once and verified on the way in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"
        self.ingest_dir = root / "ingest"
        self.blob_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ingest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_ingest_leftovers()

    def path(self, digest: str) -> Path:
        """Return where the blob named ``digest`` lives, whether or not it exists."""
        return self.blob_dir / validate_digest(digest).removeprefix("sha256:")

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in the content store") from None

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found in the content store") from None

    def writer(
        self, digest: str, size: int | None = None, *, resumable: bool = False
    ) -> BlobWriter:
        """Start writing the blob ``digest``; use it as a context manager (see above).

        A resumable writer continues a partial blob an earlier writer left. When another
        writer has locked that partial blob, this one writes a fresh, non-resumable copy.
        """
        if resumable:
            try:
                return BlobWriter(self, digest, size, resumable=True)
            except BlockingIOError:
                log.debug("partial blob %s is in use, downloading a separate copy", digest)
        return BlobWriter(self, digest, size)

    def partial_path(self, digest: str) -> Path:
        """Return where a resumable download of ``digest`` keeps its bytes."""
        return self.ingest_dir / ("partial-" + validate_digest(digest).removeprefix("sha256:"))

    def partial_size(self, digest: str) -> int:
        """Return how many bytes of ``digest`` an interrupted download left (0 if none)."""
        try:
            return self.partial_path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def discard_partial(self, digest: str) -> None:
        """Remove the partial download of ``digest``, unless a writer is using it now."""
        path = self.partial_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A writer that opened the file before this unlink opens it again once it holds
            # the lock (see _open_locked).
            path.unlink(missing_ok=True)
        except BlockingIOError:
            log.debug("keeping partial blob %s: another download is writing it", digest)
        finally:
            os.close(fd)

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` in one call and return its digest.

        When ``digest`` is given the data must match it, else InvalidArgument is raised and
        nothing is stored.
        """
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = digest or actual
        if self.exists(expected) and expected == actual:
            return actual
        with self.writer(expected, len(data)) as writer:
            writer.write(data)
            writer.commit()
        return actual

    def delete(self, digest: str) -> None:
        """Remove a blob; removing one that is absent is not an error."""
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> list[str]:
        return sorted("sha256:" + entry.name for entry in self.blob_dir.iterdir())

    def fsync_blob_dir(self) -> None:
        # The rename is durable only once the directory entry itself is on disk.
        fd = os.open(self.blob_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        except OSError as error:
            raise SystemFailure(f"cannot fsync {self.blob_dir}: {error.strerror}") from None
        finally:
            os.close(fd)

    def _remove_ingest_leftovers(self) -> None:
        for entry in self.ingest_dir.iterdir():
            if entry.name.startswith("partial-") and entry.is_file():
                if time.time() - entry.stat().st_mtime < PARTIAL_MAX_AGE_SECONDS:
                    continue
                log.info("removing partial blob %s, untouched for a week", entry)
            log.info("removing unfinished blob %s left by an earlier run", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
