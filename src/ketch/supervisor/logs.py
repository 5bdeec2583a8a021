"""Container logs in Docker's json-file format, and the timestamps the supervisor reports.

A json-file log has one JSON object per line::

    {"log":"hello\\n","stream":"stdout","time":"2026-01-02T15:04:05.123456789Z"}

``log`` is one line of the container's output including its newline, ``stream`` is
``stdout`` or ``stderr``, and ``time`` is when the supervisor read the bytes, in RFC 3339
UTC with nanoseconds. Output is split at newlines. A line longer than
``MAX_ENTRY_BYTES``, or the last bytes of a stream that ends without a newline, becomes an
entry whose ``log`` does not end in a newline, as Docker writes them. ``docker logs`` and
the usual log shippers read this format.

Rotation follows Docker's json-file driver. With a ``max_size`` the log is rotated before
an entry would take it past that many bytes: ``<log>.N-1`` becomes ``<log>.N`` and so on,
``<log>`` becomes ``<log>.1``, and a new ``<log>`` is opened, so at most ``max_files``
files exist (``<log>``, ``<log>.1`` ... ``<log>.<max_files-1>``) and the oldest is
overwritten. With ``max_files`` 1 the log is truncated instead. A reader that follows the
log sees the rename as a new inode at ``<log>`` and the truncation as a size below its
offset.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ketch.supervisor.plainlog import get_logger

log = get_logger(__name__)

# Docker's json-file driver splits a line longer than 16 KiB into several entries. The
# limit also bounds what the supervisor buffers for a container that never writes a newline.
MAX_ENTRY_BYTES = 16 * 1024


def format_timestamp(time_ns: int) -> str:
    """Format nanoseconds since the epoch as RFC 3339 UTC the way Go's RFC3339Nano does.

    Go drops trailing zeros of the fraction, and the dot too when the fraction is zero, so
    the output matches what dockerd writes: ``2026-01-02T15:04:05.1234Z``.
    """
    seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if nanoseconds:
        text += f".{nanoseconds:09d}".rstrip("0")
    return text + "Z"


def encode_entry(stream: str, payload: bytes, time_ns: int) -> bytes:
    """Encode one json-file entry; invalid UTF-8 becomes U+FFFD, as Go's encoder does."""
    entry = {
        "log": payload.decode("utf-8", errors="replace"),
        "stream": stream,
        "time": format_timestamp(time_ns),
    }
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def rotated_path(path: Path, index: int) -> Path:
    """Return the name of the ``index``-th rotated file of a log (0 is the log itself)."""
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


class JsonFileLog:
    """One container's json-file log, opened for appending.

    The supervisor feeds it raw output chunks per stream with :meth:`write`. Bytes after
    the last newline wait for the rest of their line, up to ``MAX_ENTRY_BYTES``, and
    :meth:`end_stream` writes them out when the stream ends. ``max_size`` 0 means the log
    is never rotated.
    """

    def __init__(self, path: Path, max_size: int = 0, max_files: int = 1) -> None:
        if max_size < 0 or max_files < 1:
            raise ValueError(f"invalid log rotation: max_size {max_size}, max_files {max_files}")
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self._fd = _open_for_append(path)
        self._size = os.fstat(self._fd).st_size
        self._partial: dict[str, bytearray] = {}
        self._failed_writes = 0

    def write(self, stream: str, data: bytes, time_ns: int | None = None) -> None:
        """Append the complete lines in ``data`` and keep the rest for the next call."""
        if time_ns is None:
            time_ns = time.time_ns()
        pending = self._partial.setdefault(stream, bytearray())
        pending += data
        entries = bytearray()
        start = 0
        while True:
            newline = pending.find(b"\n", start, start + MAX_ENTRY_BYTES)
            if newline >= 0:
                end = newline + 1
            elif len(pending) - start >= MAX_ENTRY_BYTES:
                end = start + MAX_ENTRY_BYTES
            else:
                break
            self._add_entry(entries, encode_entry(stream, bytes(pending[start:end]), time_ns))
            start = end
        del pending[:start]
        self._append(entries)

    def end_stream(self, stream: str, time_ns: int | None = None) -> None:
        """Write out the bytes of ``stream`` that never got a newline."""
        pending = self._partial.pop(stream, None)
        if pending:
            entries = bytearray()
            self._add_entry(
                entries, encode_entry(stream, bytes(pending), time_ns or time.time_ns())
            )
            self._append(entries)

    def close(self) -> None:
        """Flush every stream's unfinished line and close the file; later calls do nothing."""
        if self._fd < 0:
            return
        for stream in list(self._partial):
            self.end_stream(stream)
        os.close(self._fd)
        self._fd = -1
        if self._failed_writes:
            log.error(
                "log %s: %d writes failed and their lines are lost", self.path, self._failed_writes
            )

    def _add_entry(self, entries: bytearray, entry: bytes) -> None:
        """Add ``entry`` to the batch in ``entries``, rotating first if it would not fit."""
        unwritten = self._size + len(entries)
        if self.max_size and unwritten and unwritten + len(entry) > self.max_size:
            self._append(entries)
            entries.clear()
            self._rotate()
        entries += entry

    def _rotate(self) -> None:
        if self._fd < 0:
            return
        try:
            if self.max_files < 2:
                os.ftruncate(self._fd, 0)
            else:
                self._shift_rotated_files()
                os.close(self._fd)
                self._fd = -1
                self._fd = _open_for_append(self.path)
        except OSError as error:
            # While the old file is still open the log grows past max_size. When the new
            # file cannot be opened, later output is dropped and counted by _append.
            log.error("cannot rotate log %s: %s", self.path, error)
            return
        self._size = 0

    def _shift_rotated_files(self) -> None:
        for index in range(self.max_files - 1, 0, -1):
            try:
                os.replace(rotated_path(self.path, index - 1), rotated_path(self.path, index))
            except FileNotFoundError:
                pass

    def _append(self, data: bytes | bytearray) -> None:
        if self._fd < 0:
            self._failed_writes += bool(data)
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as error:
                # A full disk must not stop the container or the supervisor, so the lines
                # are dropped: the first failure is logged at once, the count at close.
                self._failed_writes += 1
                if self._failed_writes == 1:
                    log.error("cannot write log %s: %s; dropping output", self.path, error)
                return
            self._size += written
            view = view[written:]


def _open_for_append(path: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    return os.open(path, flags, 0o640)
