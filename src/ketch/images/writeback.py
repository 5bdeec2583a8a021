"""Starting the writeback of freshly written files early, before the fsync or syncfs that
makes them durable, so that the disk works while the CPU unpacks and hashes the rest."""

from __future__ import annotations

import logging

from ketch.linux import syscalls

log = logging.getLogger(__name__)


def start_writeback(fd: int, offset: int = 0, count: int = 0) -> None:
    """Start writing a file's dirty pages to disk without waiting (0 bytes: to the end).

    It only moves work earlier, because a later fsync or syncfs makes the data durable,
    so a filesystem that rejects sync_file_range(2) costs nothing but the early start.
    """
    try:
        syscalls.sync_file_range(fd, offset, count, syscalls.SYNC_FILE_RANGE_WRITE)
    except OSError as error:
        log.debug("cannot start writeback of fd %d: %s", fd, error)
