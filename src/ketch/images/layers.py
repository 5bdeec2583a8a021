"""Layer unpacking: a tar (plain, gzip or zstd) streamed into a snapshot directory.

This module picks the decompressor from the blob's first bytes, computes the diff ID as the
tar streams, and hands the entries to :class:`ketch.images.layer_entries.EntryWriter`.
The docstring of the ``layer_entries`` module describes how a hostile layer is kept inside
the snapshot and the two forms whiteouts take.

Decompression bombs are bounded: :class:`UnpackLimits` caps the uncompressed bytes and
the number of entries, and a layer past either cap is rejected with both numbers named.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ketch.errors import SystemFailure
from ketch.images.layer_entries import (
    CHUNK_SIZE,
    DEFAULT_LIMITS,
    DIRECTORY_FLAGS,
    OPAQUE_WHITEOUT,
    OVERLAY_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    EntryWriter,
    LayerRejected,
    LimitExceeded,
    UnpackLimits,
    WhiteoutForm,
    split_entry_path,
)
from ketch.linux import syscalls

# Names other modules import from here. Most are defined in layer_entries.
__all__ = [
    "DEFAULT_LIMITS",
    "OPAQUE_WHITEOUT",
    "OVERLAY_OPAQUE_XATTR",
    "WHITEOUT_PREFIX",
    "LayerRejected",
    "UnpackLimits",
    "UnpackedLayer",
    "WhiteoutForm",
    "split_entry_path",
    "unpack_layer",
    "unpack_layer_stream",
]

log = logging.getLogger(__name__)


_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class UnpackedLayer:
    diff_id: str
    size: int  # bytes of regular-file content


class _CountingReader:
    """A binary stream wrapper that counts the bytes read and optionally hashes them."""

    def __init__(self, raw: BinaryIO, digest: bool, limit: int | None = None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256() if digest else None
        self._limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        if self._limit is not None and self.count > self._limit:
            raise LimitExceeded(f"more than {self._limit} uncompressed bytes")
        if self._hash is not None:
            self._hash.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        # isal's IGzipFile reads through readinto.
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK_SIZE):
            pass

    def hexdigest(self) -> str:
        assert self._hash is not None
        return self._hash.hexdigest()


def unpack_layer(
    blob: Path,
    destination: Path,
    *,
    layer: str,
    expected_diff_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    whiteouts: WhiteoutForm = WhiteoutForm.OVERLAY,
    limits: UnpackLimits = DEFAULT_LIMITS,
    sync: bool = True,
) -> UnpackedLayer:
    """Unpack the layer blob at ``blob`` into the empty directory ``destination``.

    ``layer`` names the layer in errors (its digest). The diff ID of the uncompressed tar
    is computed as it streams and must equal ``expected_diff_id`` when given.
    ``progress(done, total)`` is called with compressed bytes read. ``destination`` must be
    empty for ``WhiteoutForm.OVERLAY`` and hold the parent's files for ``APPLY``. Raises
    LayerRejected (an InvalidArgument) for a hostile or malformed layer or one past
    ``limits``; the caller removes ``destination`` then. With ``sync=False`` the files
    are not flushed to disk, and the caller must sync before it records them.
    """
    total = blob.stat().st_size
    with open(blob, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        return unpack_layer_stream(
            raw,
            magic,
            total,
            destination,
            layer=layer,
            expected_diff_id=expected_diff_id,
            progress=progress,
            whiteouts=whiteouts,
            limits=limits,
            sync=sync,
        )


def unpack_layer_stream(
    raw: BinaryIO,
    magic: bytes,
    total: int,
    destination: Path,
    *,
    layer: str,
    expected_diff_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    whiteouts: WhiteoutForm = WhiteoutForm.OVERLAY,
    limits: UnpackLimits = DEFAULT_LIMITS,
    sync: bool = True,
) -> UnpackedLayer:
    """Unpack the layer blob read from ``raw`` as ``unpack_layer`` does.

    ``magic`` is the blob's first 4 bytes (or fewer for a shorter blob), which pick the
    decompressor, and ``raw`` still starts at byte 0. ``total`` is the blob's size.
    """
    compressed = _CountingReader(raw, digest=False)
    uncompressed = _CountingReader(
        _decompressed(compressed, magic, layer), digest=True, limit=limits.max_bytes
    )

    def report_progress() -> None:
        if progress is not None:
            progress(compressed.count, total)

    root_fd = os.open(destination, DIRECTORY_FLAGS)
    entry_writer = EntryWriter(root_fd, layer, whiteouts, limits)
    try:
        entry_writer.unpack(uncompressed, report_progress)
        uncompressed.drain()
        if sync:
            _sync_filesystem(root_fd, destination)
    except LimitExceeded as error:
        raise LayerRejected(
            f"layer {layer} unpacks to {error}, the configured maximum; "
            "it may be a decompression bomb"
        ) from None
    except (EOFError, zlib.error, gzip.BadGzipFile, tarfile.TarError) as error:
        raise LayerRejected(f"layer {layer} is not a valid tar archive: {error}") from None
    except Exception as error:
        if not _is_decompressor_error(error):
            raise
        raise LayerRejected(f"layer {layer} is not valid compressed data: {error}") from None
    finally:
        os.close(root_fd)

    diff_id = "sha256:" + uncompressed.hexdigest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise LayerRejected(
            f"layer {layer}: diff ID mismatch: the image config lists {expected_diff_id}, "
            f"the uncompressed layer is {diff_id}"
        )
    return UnpackedLayer(diff_id, entry_writer.size)


def _decompressed(reader: _CountingReader, magic: bytes, layer: str) -> BinaryIO:
    # The blob's first bytes decide, not the manifest's media type, as in Docker's archive
    # code, so a gzip layer whose media type says plain tar still unpacks.
    if magic.startswith(_GZIP_MAGIC):
        return _gzip_reader(reader)
    if magic == _ZSTD_MAGIC:
        return _zstd_reader(reader, layer)
    return reader  # type: ignore[return-value]


def _gzip_reader(reader: _CountingReader) -> BinaryIO:
    # isal's igzip decompresses about twice as fast as zlib (benchmarks/unpack.py); it
    # is optional, and zlib does the same job without it.
    try:
        from isal import igzip
    except ImportError:
        return gzip.GzipFile(fileobj=reader, mode="rb")  # type: ignore[arg-type]
    return igzip.IGzipFile(fileobj=reader, mode="rb")  # type: ignore[arg-type, return-value]


def _zstd_reader(reader: _CountingReader, layer: str) -> BinaryIO:
    try:
        import zstandard
    except ImportError:
        raise LayerRejected(
            f"layer {layer} is zstd-compressed and the zstandard package is not installed"
        ) from None
    # The decompressor's default window cap (128 MiB) bounds its memory, whatever the
    # frame header requests.
    decompressor = zstandard.ZstdDecompressor()
    return decompressor.stream_reader(reader, read_across_frames=True)  # type: ignore[return-value]


def _is_decompressor_error(error: Exception) -> bool:
    # The optional decompressors' error classes, matched by name so that neither
    # package has to be imported to recognise them.
    return type(error).__name__ in ("ZstdError", "IsalError")


def _sync_filesystem(fd: int, destination: Path) -> None:
    # The snapshot is recorded as committed only after its files are on disk.
    try:
        syscalls.syncfs(fd)
    except OSError as error:
        raise SystemFailure(f"cannot sync the filesystem of {destination}: {error}") from None
