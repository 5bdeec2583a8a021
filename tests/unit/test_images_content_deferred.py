"""Deferred blob hashing: the reader of a download hashes what it takes, and the commit
hashes the rest from the file, so the digest is always checked over every byte."""

import hashlib
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.images.content import ContentStore
from ketch.images.feed import FeedBroken, LayerFeed

DATA = bytes(range(256)) * 64
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path)


@pytest.mark.parametrize("hashed_by_reader", [0, 1000, len(DATA)])
def test_commit_takes_over_hash(store: ContentStore, hashed_by_reader: int) -> None:
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        deferred = writer.defer_hash()
        writer.write(DATA)
        deferred.update(DATA[:hashed_by_reader], 0)
        writer.commit()
    assert store.read(DIGEST) == DATA


def test_deferred_mismatch_rejected(store: ContentStore) -> None:
    tampered = b"x" + DATA[1:]
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        deferred = writer.defer_hash()
        writer.write(tampered)
        deferred.update(tampered[:500], 0)
        with pytest.raises(InvalidArgument, match="does not match its digest"):
            writer.commit()
    assert not store.exists(DIGEST)


def test_update_out_of_order_ignored(store: ContentStore) -> None:
    with store.writer(DIGEST, len(DATA)) as writer:
        deferred = writer.defer_hash()
        writer.write(DATA)
        deferred.update(b"not at the hashed end", 100)
        writer.commit()
    assert store.exists(DIGEST)


def test_update_after_commit_ignored(store: ContentStore) -> None:
    with store.writer(DIGEST, len(DATA)) as writer:
        deferred = writer.defer_hash()
        writer.write(DATA)
        writer.commit()
    deferred.update(b"late", 0)
    _, count = deferred.stop()
    assert count == 0


def test_restart_hashes_inline(store: ContentStore) -> None:
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        deferred = writer.defer_hash()
        writer.write(b"wrong start")
        writer.restart()
        deferred.update(b"wrong start", 0)
        writer.write(DATA)
        writer.commit()
    assert store.read(DIGEST) == DATA


def test_defer_after_write_rejected(store: ContentStore) -> None:
    with store.writer(DIGEST, len(DATA)) as writer:
        writer.write(DATA[:10])
        with pytest.raises(ValueError, match="cannot defer"):
            writer.defer_hash()


def test_feed_reader_hashes_for_writer(store: ContentStore) -> None:
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        feed = LayerFeed(len(DATA), writer.defer_hash())
        for offset in range(0, len(DATA), 3000):
            chunk = DATA[offset : offset + 3000]
            writer.write(chunk)
            feed.put(chunk)
        feed.close()
        assert feed.read(10) == DATA[:10]
        while feed.read1(5000):
            pass
        writer.commit()
    assert store.read(DIGEST) == DATA


def test_broken_feed_leaves_rest_to_commit(store: ContentStore) -> None:
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        feed = LayerFeed(4000, writer.defer_hash())
        writer.write(DATA[:3000])
        feed.put(DATA[:3000])
        assert feed.read1() == DATA[:3000]
        writer.write(DATA[3000:])
        feed.put(DATA[3000:])
        with pytest.raises(FeedBroken):
            feed.read1()
        writer.commit()
    assert store.read(DIGEST) == DATA
