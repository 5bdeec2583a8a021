"""A thread of its own for one download's blob writes, so that the event loop only receives.

Hashing a layer blob and writing it to disk cost more CPU than receiving it (about 130 ms
against 55 ms for 150 MB on the 2-core test machine), and on the event loop they delayed
every other download. :class:`BlobWriteThread` takes the
chunks in order from the download coroutine and, in its thread, passes each to the
:class:`~ketch.images.content.BlobWriter` (which hashes and writes it) and then to the
unpack's :class:`~ketch.images.feed.LayerFeed`. sha256, ``os.write`` and the feed's copy
release the GIL on large buffers, so these threads use the second core.

The coroutine waits once more than ``max_queued`` bytes are waiting for the thread, so a
slow disk slows the download instead of filling memory. An error in the thread (a blob
longer than its size, a full disk) is raised by the next ``write`` or by ``drain``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable

from ketch.images.content import BlobWriter
from ketch.images.feed import LayerFeed

log = logging.getLogger(__name__)

# Marks in the queue where the download started over from byte 0.
_RESTART = object()


class BlobWriteThread:
    """Writes one download's chunks through ``writer`` (and into ``feed``) in a thread.

    Use it as a context manager: leaving it drops the chunks not yet written and waits for
    the thread, so that the caller may close ``writer`` afterwards.
    """

    def __init__(self, writer: BlobWriter, feed: LayerFeed | None, max_queued: int) -> None:
        self.writer = writer
        self.feed = feed
        self.max_queued = max_queued
        # Bytes handed to the thread since the blob's byte 0, counted on the event loop.
        self.received = writer.written
        self._loop = asyncio.get_running_loop()
        self._condition = threading.Condition()
        self._queue: collections.deque[bytes | object] = collections.deque()
        self._queued_bytes = 0
        self._busy = False
        self._stopping = False
        self._error: BaseException | None = None
        self._waiter: tuple[Callable[[], bool], asyncio.Future[None]] | None = None
        self._thread = threading.Thread(target=self._run, name="ketch-blob-write", daemon=True)
        self._thread.start()

    async def write(self, chunk: bytes) -> None:
        """Queue ``chunk``; waits while more than ``max_queued`` bytes are queued."""
        self._raise_error()
        with self._condition:
            self._queue.append(chunk)
            self._queued_bytes += len(chunk)
            self._condition.notify()
        self.received += len(chunk)
        if self._queued_bytes > self.max_queued:
            await self._wait_until(lambda: self._queued_bytes <= self.max_queued // 2)
            self._raise_error()

    def restart(self) -> None:
        """Queue a restart: the feed breaks off and the writer drops its bytes, in order."""
        with self._condition:
            self._queue.append(_RESTART)
            self._condition.notify()
        self.received = 0

    async def drain(self) -> None:
        """Wait until every queued chunk is written; raise the thread's error if any."""
        await self._wait_until(lambda: not self._queue and not self._busy)
        self._raise_error()

    def close(self) -> None:
        """Drop the chunks not yet written and wait for the thread to end.

        It blocks the caller for at most the one write in progress.
        """
        with self._condition:
            self._stopping = True
            self._queue.clear()
            self._queued_bytes = 0
            self._condition.notify()
        self._thread.join()

    def __enter__(self) -> BlobWriteThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        with self._condition:
            if ready() or self._error is not None:
                return
            future = self._loop.create_future()
            self._waiter = (ready, future)
        await future

    def _run(self) -> None:
        started = time.thread_time()
        try:
            self._write_queued()
        finally:
            cpu_seconds = time.thread_time() - started
            log.debug(
                "blob %s: hashed and wrote %d bytes in %.0f ms of CPU",
                self.writer.digest, self.writer.written, cpu_seconds * 1000,
                extra={"pull_stage": "blob write", "cpu_seconds": cpu_seconds},
            )  # fmt: skip

    def _write_queued(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    self._wake_waiter()
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                if self._error is None:
                    self._apply(item)
            except BaseException as error:  # noqa: BLE001 - raised again on the event loop
                self._error = error
            with self._condition:
                self._busy = False
                if isinstance(item, bytes):
                    self._queued_bytes -= len(item)
                self._wake_waiter()

    def _apply(self, item: bytes | object) -> None:
        if item is _RESTART:
            if self.feed is not None:
                self.feed.break_off("the download of the layer started over")
            self.writer.restart()
            return
        assert isinstance(item, bytes)
        self.writer.write(item)
        if self.feed is not None:
            self.feed.put(item)

    def _wake_waiter(self) -> None:
        # Called with the condition held.
        if self._waiter is None:
            return
        ready, future = self._waiter
        if self._error is None and not self._stopping and not ready():
            return
        self._waiter = None
        self._loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
