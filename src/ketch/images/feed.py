"""A byte stream that the download writes and an unpacking thread reads, so that a layer
unpacks while its blob is still arriving.

The writer never blocks: past ``max_buffered`` bytes not yet read, or when the download
restarts or fails, the feed breaks, the reader gets :class:`FeedBroken`, and the caller
unpacks the layer again from the stored blob once it is verified.

With a :class:`~ketch.images.content.DeferredHash` the reader also hashes the bytes it
takes for the blob writer, so that the event loop, which receives every download, does
not spend its time on the digests.
"""

from __future__ import annotations

import collections
import collections.abc
import threading

from ketch.images.content import DeferredHash


class FeedBroken(Exception):
    """The stream was cut off before its end; the message gives the reason."""


class LayerFeed:
    """Chunks handed from the event loop to one reader thread, in order."""

    def __init__(self, max_buffered: int, digest: DeferredHash | None = None) -> None:
        self.max_buffered = max_buffered
        self._digest = digest
        self._read_offset = 0  # bytes the reader has taken so far, its offset in the blob
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._condition = threading.Condition()
        self._closed = False
        self._broken: str | None = None

    def put(self, data: bytes) -> None:
        """Append ``data``; breaks the feed instead of buffering past ``max_buffered``."""
        if not data:
            return  # an empty chunk would read as the end of the stream
        with self._condition:
            if self._closed or self._broken is not None:
                return
            if self._buffered + len(data) > self.max_buffered:
                self._broken = f"the unpack fell more than {self.max_buffered} bytes behind"
            else:
                self._chunks.append(data)
                self._buffered += len(data)
            self._condition.notify_all()

    def close(self) -> None:
        """End the stream: the reader gets the rest, then end of file."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def break_off(self, reason: str, *, even_if_closed: bool = False) -> None:
        """Cut the stream: the reader's next read raises FeedBroken with ``reason``.

        Does nothing once the stream is closed, so the reader gets all of a complete blob,
        unless ``even_if_closed`` is set for a reader whose work will be thrown away.
        """
        with self._condition:
            if self._broken is not None or (self._closed and not even_if_closed):
                return
            self._broken = reason
            self._chunks.clear()
            self._buffered = 0
            self._condition.notify_all()

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def peek(self, size: int) -> bytes:
        """Wait for the first ``size`` bytes (fewer at end of file) without consuming them."""
        with self._condition:
            self._wait(lambda: self._buffered >= size)
            # Only the chunks that hold the first bytes are copied, however much is buffered.
            head = bytearray()
            for chunk in self._chunks:
                head += chunk[: size - len(head)]
                if len(head) >= size:
                    break
            return bytes(head)

    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes (all that is buffered for -1), b"" at end of file."""
        with self._condition:
            self._wait(lambda: self._buffered > 0)
            parts: list[bytes] = []
            wanted = size if size >= 0 else self._buffered
            while self._chunks and wanted > 0:
                chunk = self._chunks.popleft()
                if len(chunk) > wanted:
                    self._chunks.appendleft(chunk[wanted:])
                    chunk = chunk[:wanted]
                parts.append(chunk)
                wanted -= len(chunk)
                self._buffered -= len(chunk)
            data = b"".join(parts)
            offset = self._read_offset
            self._read_offset += len(data)
        self._hash(data, offset)
        return data

    def read1(self, size: int = -1) -> bytes:
        """Return the next chunk as the writer put it, or its first ``size`` bytes when it is
        longer, and b"" at end of file. Unlike ``read`` it never joins chunks, so the bytes
        reach the reader without a copy."""
        with self._condition:
            self._wait(lambda: self._buffered > 0)
            if not self._chunks:
                return b""
            chunk = self._chunks.popleft()
            if 0 <= size < len(chunk):
                self._chunks.appendleft(chunk[size:])
                chunk = chunk[:size]
            self._buffered -= len(chunk)
            offset = self._read_offset
            self._read_offset += len(chunk)
        self._hash(chunk, offset)
        return chunk

    def _hash(self, data: bytes, offset: int) -> None:
        # Outside the feed's lock, so that put() does not wait for the hash.
        if self._digest is not None and data:
            self._digest.update(data, offset)

    def _wait(self, ready: collections.abc.Callable[[], bool]) -> None:
        while True:
            if self._broken is not None:
                raise FeedBroken(self._broken)
            if ready() or self._closed:
                return
            self._condition.wait()
