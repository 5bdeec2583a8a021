"""The byte streams of a layer unpack: the blob's chunks in, the tar out as a forward-only
file that ``tarfile`` parses, hashed for the diff ID and bounded by the unpack limits.

Every step passes whole chunks of up to ``CHUNK_SIZE`` bytes. A regular file's content
goes from the decompressed chunk to ``os.write`` through a memoryview, so the unpack makes
no copy of it in Python: the decompressor writes it, hashlib and the kernel read it. The
large chunks also let hashlib, the decompressor and ``os.write`` run without the GIL most
of the time, so unpacks in several threads use several cores.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import types
import zlib
from collections.abc import Iterator
from typing import Protocol

from ketch.images.layer_entries import CHUNK_SIZE, LayerRejected, LimitExceeded

# zlib's window size with 16 added: the stream is gzip, header and trailer checked.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class ChunkReader(Protocol):
    """Binary stream read in chunks, whose ``read1`` may return fewer bytes than requested."""

    def read1(self, size: int = ..., /) -> bytes: ...


class CompressedSource:
    """The blob's bytes as the unpack reads them, counted for progress."""

    def __init__(self, raw: ChunkReader) -> None:
        self._raw = raw
        self.count = 0

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        """Return up to ``size`` bytes of the blob, b"" at its end."""
        data = self._raw.read1(size)
        self.count += len(data)
        return data


def inflate_gzip(source: CompressedSource) -> Iterator[bytes]:
    """Yield the decompressed bytes of a gzip stream in chunks of at most CHUNK_SIZE.

    Like Python's gzip module, this reads every member of a multi-member stream, checks
    each member's CRC and size, skips zero bytes that pad the end, and raises EOFError for
    a stream that ends inside a member. The chunk cap bounds the memory a small blob that
    inflates to a huge one can take between two checks of the unpack limits.
    """
    zlib_module = _zlib_module()
    data = source.read()
    while data:
        decompressor = zlib_module.decompressobj(_GZIP_WBITS)
        while not decompressor.eof:
            if not data:
                data = source.read()
            output = decompressor.decompress(data, CHUNK_SIZE)
            if not output and not data:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            data = decompressor.unconsumed_tail
            if output:
                yield output
        data = _skip_zero_padding(decompressor.unused_data, source)


def _zlib_module() -> types.ModuleType:
    # isal's inflate is about twice as fast as zlib's on layers (benchmarks/unpack.py), and
    # its decompressobj has zlib's interface. It is optional.
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib
    return isal_zlib


def _skip_zero_padding(data: bytes, source: CompressedSource) -> bytes:
    """Return the input after the zero bytes that may follow a gzip member, b"" at the end."""
    while True:
        data = data.lstrip(b"\0")
        if data:
            return data
        data = source.read()
        if not data:
            return b""


def unzstd(source: CompressedSource, layer: str) -> Iterator[bytes]:
    """Yield the decompressed bytes of a zstd stream (all its frames) in chunks."""
    try:
        import zstandard
    except ImportError:
        raise LayerRejected(
            f"layer {layer} is zstd-compressed and the zstandard package is not installed"
        ) from None
    # The decompressor's default window cap (128 MiB) bounds its memory, whatever the
    # frame header requests.
    decompressor = zstandard.ZstdDecompressor()
    reader = decompressor.stream_reader(source, read_size=CHUNK_SIZE, read_across_frames=True)
    while chunk := reader.read(CHUNK_SIZE):
        yield chunk


def plain_chunks(source: CompressedSource) -> Iterator[bytes]:
    """Yield an uncompressed blob's chunks as they are read."""
    while chunk := source.read():
        yield chunk


class TarStream:
    """The uncompressed tar as a forward-only binary file for ``tarfile.TarFile``.

    Each chunk is hashed for the diff ID and counted against ``max_bytes`` when it arrives,
    before anything reads it. ``seek`` goes forward only, by skipping, which is all that
    TarFile does when it reads members in order. ``copy_to`` writes a member's content to
    a file without copying it in user space.
    """

    def __init__(self, chunks: Iterator[bytes], max_bytes: int) -> None:
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._view = memoryview(b"")
        self._position = 0
        self.count = 0

    def read(self, size: int) -> bytes:
        """Return the next ``size`` bytes, fewer at the end of the tar."""
        if size < 0:
            raise ValueError(f"TarStream.read requires a size of 0 or more, not {size}")
        parts: list[memoryview] = []
        while size > 0 and self._next_bytes():
            part = self._view[:size]
            self._consume(len(part))
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next ``size`` bytes to the file ``fd``.

        Raises tarfile.ReadError when the tar ends first, as tarfile's own readers do.
        """
        while size > 0:
            if not self._next_bytes():
                raise tarfile.ReadError("unexpected end of data")
            written = os.write(fd, self._view[:size])
            self._consume(written)
            size -= written

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Skip forward to ``offset``, stopping at the end of the tar as a file's read would."""
        if whence != os.SEEK_SET or offset < self._position:
            raise tarfile.StreamError("seeking backwards is not allowed")
        while self._position < offset and self._next_bytes():
            self._consume(min(len(self._view), offset - self._position))
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        # True for tarfile's member readers, which seek forward to each data block.
        return True

    def drain(self) -> None:
        """Read to the end, so the diff ID covers any bytes after the end-of-archive blocks."""
        while self._next_bytes():
            self._consume(len(self._view))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def _next_bytes(self) -> bool:
        """Make sure unread bytes are at hand; False at the end of the tar."""
        if self._view:
            return True
        chunk = next(self._chunks, b"")
        if not chunk:
            return False
        self.count += len(chunk)
        if self.count > self._max_bytes:
            raise LimitExceeded(f"more than {self._max_bytes} uncompressed bytes")
        self._hash.update(chunk)
        self._view = memoryview(chunk)
        return True

    def _consume(self, count: int) -> None:
        self._view = self._view[count:]
        self._position += count
