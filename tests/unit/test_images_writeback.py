"""Early writeback: the sync_file_range(2) wrapper and the helper that ignores its errors."""

import errno
import hashlib
import os
from pathlib import Path

import pytest

from ketch.images import content
from ketch.images.content import WRITEBACK_STEP_BYTES, ContentStore
from ketch.images.writeback import start_writeback
from ketch.linux import syscalls


def test_sync_file_range_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 65536)
    fd = os.open(path, os.O_RDWR)
    try:
        syscalls.sync_file_range(fd, 0, 0, syscalls.SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 65536


def test_sync_file_range_pipe_raises() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError) as raised:
            syscalls.sync_file_range(write_end, 0, 0, syscalls.SYNC_FILE_RANGE_WRITE)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert raised.value.errno == errno.ESPIPE


def test_start_writeback_ignores_pipe() -> None:
    read_end, write_end = os.pipe()
    try:
        start_writeback(write_end)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_blob_writer_starts_writeback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges: list[tuple[int, int]] = []

    def record_writeback(fd: int, offset: int = 0, count: int = 0) -> None:
        ranges.append((offset, count))
        start_writeback(fd, offset, count)

    monkeypatch.setattr(content, "start_writeback", record_writeback)
    store = ContentStore(tmp_path)
    data = os.urandom(WRITEBACK_STEP_BYTES + 1000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with store.writer(digest, len(data)) as writer:
        for offset in range(0, len(data), 1024 * 1024):
            writer.write(data[offset : offset + 1024 * 1024])
        writer.commit()

    assert store.read(digest) == data
    assert ranges == [(0, WRITEBACK_STEP_BYTES)]
