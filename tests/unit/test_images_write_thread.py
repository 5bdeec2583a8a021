"""BlobWriteThread: a download's blob writes and feed copies, in a thread of their own."""

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.images.content import WRITEBACK_STEP_BYTES, ContentStore
from ketch.images.feed import FeedBroken, LayerFeed
from ketch.images.write_thread import BlobWriteThread


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path)


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[offset : offset + size] for offset in range(0, len(data), size)]


def test_write_thread_keeps_order(store: ContentStore) -> None:
    data = os.urandom(300_000)
    feed = LayerFeed(len(data))

    async def write_all() -> None:
        with store.writer(digest_of(data), len(data)) as writer:
            with BlobWriteThread(writer, feed, max_queued=10_000) as writes:
                for chunk in chunks_of(data, 7_000):
                    await writes.write(chunk)
                await writes.drain()
            writer.commit()

    asyncio.run(write_all())
    feed.close()
    assert store.read(digest_of(data)) == data
    assert feed.read() == data


def test_write_thread_counts_received(store: ContentStore) -> None:
    async def write_two() -> int:
        with store.writer(digest_of(b"abcdef"), 6) as writer:
            with BlobWriteThread(writer, None, max_queued=100) as writes:
                await writes.write(b"abc")
                await writes.write(b"def")
                return writes.received

    assert asyncio.run(write_two()) == 6


def test_write_thread_raises_overlong(store: ContentStore) -> None:
    async def write_too_much() -> None:
        with store.writer(digest_of(b"abc"), 3) as writer:
            with BlobWriteThread(writer, None, max_queued=100) as writes:
                await writes.write(b"abcd")
                await writes.drain()

    with pytest.raises(InvalidArgument, match="longer than the 3 bytes"):
        asyncio.run(write_too_much())


def test_write_thread_error_stops_writes(store: ContentStore) -> None:
    written: list[int] = []

    async def write_after_error() -> None:
        with store.writer(digest_of(b"abc"), 3) as writer:
            with BlobWriteThread(writer, None, max_queued=100) as writes:
                await writes.write(b"abcd")
                with pytest.raises(InvalidArgument):
                    await writes.drain()
                with pytest.raises(InvalidArgument):
                    await writes.write(b"e")
                written.append(writer.written)

    asyncio.run(write_after_error())
    assert written == [0]


def test_write_thread_restart_in_order(store: ContentStore) -> None:
    feed = LayerFeed(100)

    async def write_restart_write() -> int:
        with store.writer(digest_of(b"new"), 3) as writer:
            with BlobWriteThread(writer, feed, max_queued=100) as writes:
                await writes.write(b"old")
                writes.restart()
                await writes.write(b"new")
                await writes.drain()
                received = writes.received
            writer.commit()
        return received

    assert asyncio.run(write_restart_write()) == 3
    assert store.read(digest_of(b"new")) == b"new"
    with pytest.raises(FeedBroken, match="started over"):
        feed.read(1)


def test_write_thread_close_drops_queue(store: ContentStore) -> None:
    data = os.urandom(1_000_000)

    async def write_and_leave() -> None:
        with store.writer(digest_of(data), len(data), resumable=True) as writer:
            with BlobWriteThread(writer, None, max_queued=len(data)) as writes:
                await writes.write(data[:1_000])
                await writes.drain()
                for chunk in chunks_of(data[1_000:], 1_000):
                    await writes.write(chunk)

    asyncio.run(write_and_leave())
    partial = store.partial_path(digest_of(data)).read_bytes()
    assert len(partial) >= 1_000
    assert data.startswith(partial)


def test_blob_over_writeback_step(store: ContentStore) -> None:
    data = os.urandom(WRITEBACK_STEP_BYTES + 1000)
    with store.writer(digest_of(data), len(data)) as writer:
        for chunk in chunks_of(data, 1024 * 1024):
            writer.write(chunk)
        writer.commit()
    assert store.size(digest_of(data)) == len(data)
