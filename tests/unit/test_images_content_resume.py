"""Resumable blob writers: partial bytes kept, resumed, locked and discarded when wrong."""

import fcntl
import hashlib
import os
import time
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.images.content import PARTIAL_MAX_AGE_SECONDS, ContentStore

DATA = b"0123456789" * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def interrupted(store: ContentStore, count: int) -> None:
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        writer.write(DATA[:count])


def test_abort_keeps_partial(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    interrupted(store, 4000)
    assert store.partial_size(DIGEST) == 4000


def test_resume_commits(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    interrupted(store, 4000)
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        assert writer.written == 4000
        writer.write(DATA[4000:])
        writer.commit()
    assert store.read(DIGEST) == DATA
    assert store.partial_size(DIGEST) == 0


def test_mismatch_discards_partial(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.partial_path(DIGEST).write_bytes(b"x" * 4000)
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        writer.write(DATA[4000:])
        with pytest.raises(InvalidArgument, match="does not match its digest"):
            writer.commit()
    assert not store.partial_path(DIGEST).exists()


def test_restart_drops_bytes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.partial_path(DIGEST).write_bytes(b"x" * 4000)
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        writer.restart()
        writer.write(DATA)
        writer.commit()
    assert store.read(DIGEST) == DATA


def test_second_writer_not_resumable(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with store.writer(DIGEST, len(DATA), resumable=True) as first:
        first.write(DATA[:10])
        second = store.writer(DIGEST, len(DATA), resumable=True)
        assert second.resumable is False
        second.abort()


def test_reopen_keeps_partial(tmp_path: Path) -> None:
    interrupted(ContentStore(tmp_path), 4000)
    assert ContentStore(tmp_path).partial_size(DIGEST) == 4000


def test_empty_partial_not_kept(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    interrupted(store, 0)
    assert not store.partial_path(DIGEST).exists()


def test_reopen_removes_stale_partial(tmp_path: Path) -> None:
    interrupted(ContentStore(tmp_path), 4000)
    partial = ContentStore(tmp_path).partial_path(DIGEST)
    stale = time.time() - PARTIAL_MAX_AGE_SECONDS - 60
    os.utime(partial, (stale, stale))
    assert ContentStore(tmp_path).partial_size(DIGEST) == 0


def test_discard_partial_removes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    interrupted(store, 4000)
    store.discard_partial(DIGEST)
    assert not store.partial_path(DIGEST).exists()


def test_discard_partial_keeps_locked(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    interrupted(store, 4000)
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        store.discard_partial(DIGEST)
        writer.write(DATA[4000:])
        writer.commit()
    assert store.read(DIGEST) == DATA


def test_discard_partial_missing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.discard_partial(DIGEST)
    assert list(store.ingest_dir.iterdir()) == []


def test_writer_reopens_discarded_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ContentStore(tmp_path)
    interrupted(store, 4000)
    real_flock = fcntl.flock
    discarded: list[int] = []

    def flock_after_discard(fd: int, operation: int) -> None:
        # The partial goes between the writer's open and its lock, as when a failed pull
        # discards it at that moment.
        if not discarded:
            discarded.append(fd)
            store.discard_partial(DIGEST)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_discard)
    with store.writer(DIGEST, len(DATA), resumable=True) as writer:
        assert writer.written == 0
        writer.write(DATA)
        writer.commit()

    assert store.read(DIGEST) == DATA
