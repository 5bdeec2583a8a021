"""Layer unpacking: a tar (plain, gzip or zstd) streamed into a snapshot directory.

This module picks the decompressor from the blob's first bytes, streams the tar through
:class:`ketch.images.layer_stream.TarStream`, which computes the diff ID as it goes, and
hands the entries to :class:`ketch.images.layer_entries.EntryWriter`. The docstring of the
``layer_entries`` module describes how a hostile layer is kept inside the snapshot and the
two forms whiteouts take.

Decompression bombs are bounded: :class:`UnpackLimits` caps the uncompressed bytes and
the number of entries, and a layer past either cap is rejected with both numbers named.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ketch.errors import SystemFailure
from ketch.images.layer_entries import (
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
from ketch.images.layer_stream import (
    ChunkReader,
    CompressedSource,
    TarStream,
    inflate_gzip,
    plain_chunks,
    unzstd,
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
    raw: ChunkReader,
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
    compressed = CompressedSource(raw)
    tar = TarStream(_decompressed(compressed, magic, layer), limits.max_bytes)

    def report_progress() -> None:
        if progress is not None:
            progress(compressed.count, total)

    root_fd = os.open(destination, DIRECTORY_FLAGS)
    entry_writer = EntryWriter(root_fd, layer, whiteouts, limits)
    try:
        entry_writer.unpack(tar, report_progress)
        tar.drain()
        if sync:
            _sync_filesystem(root_fd, destination)
    except LimitExceeded as error:
        raise LayerRejected(
            f"layer {layer} unpacks to {error}, the configured maximum; "
            "it may be a decompression bomb"
        ) from None
    except (EOFError, tarfile.TarError) as error:
        raise LayerRejected(f"layer {layer} is not a valid tar archive: {error}") from None
    except Exception as error:
        if not _is_decompressor_error(error):
            raise
        raise LayerRejected(f"layer {layer} is not valid compressed data: {error}") from None
    finally:
        os.close(root_fd)

    diff_id = "sha256:" + tar.hexdigest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise LayerRejected(
            f"layer {layer}: diff ID mismatch: the image config lists {expected_diff_id}, "
            f"the uncompressed layer is {diff_id}"
        )
    return UnpackedLayer(diff_id, entry_writer.size)


def _decompressed(source: CompressedSource, magic: bytes, layer: str) -> Iterator[bytes]:
    # The blob's first bytes decide, not the manifest's media type, as in Docker's archive
    # code, so a gzip layer whose media type says plain tar still unpacks.
    if magic.startswith(_GZIP_MAGIC):
        return inflate_gzip(source)
    if magic == _ZSTD_MAGIC:
        return unzstd(source, layer)
    return plain_chunks(source)


def _is_decompressor_error(error: Exception) -> bool:
    # The optional decompressors' error classes are matched by name, so that neither
    # package has to be imported to recognise them.
    return isinstance(error, zlib.error) or type(error).__name__ in ("ZstdError", "IsalError")


def _sync_filesystem(fd: int, destination: Path) -> None:
    # The snapshot is recorded as committed only after its files are on disk.
    try:
        syscalls.syncfs(fd)
    except OSError as error:
        raise SystemFailure(f"cannot sync the filesystem of {destination}: {error}") from None
