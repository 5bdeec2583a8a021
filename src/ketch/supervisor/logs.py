"""Container logs in Docker's json-file format, and the timestamps the supervisor reports.

A json-file log has one JSON object per line::

    {"log":"hello\\n","stream":"stdout","time":"2026-01-02T15:04:05.123456789Z"}

``log`` is one line of the container's output including its newline, ``stream`` is
``stdout`` or ``stderr``, and ``time`` is when the supervisor read the bytes, in RFC 3339
UTC with nanoseconds. Output is split at newlines. A line longer than
``MAX_ENTRY_BYTES``, or the last bytes of a stream that ends without a newline, becomes an
entry whose ``log`` does not end in a newline, as Docker writes them. ``docker logs`` and
the usual log shippers read this format.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

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


# Limitation: no rotation like json-file's max-size and max-file; a log grows until the
# engine deletes it with the container.
class JsonFileLog:
    """One container's json-file log, opened for appending.

    The supervisor feeds it raw output chunks per stream with :meth:`write`. Bytes after
    the last newline wait for the rest of their line, up to ``MAX_ENTRY_BYTES``, and
    :meth:`end_stream` writes them out when the stream ends.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        self._fd = os.open(path, flags, 0o640)
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
            entries += encode_entry(stream, bytes(pending[start:end]), time_ns)
            start = end
        del pending[:start]
        self._append(entries)

    def end_stream(self, stream: str, time_ns: int | None = None) -> None:
        """Write out the bytes of ``stream`` that never got a newline."""
        pending = self._partial.pop(stream, None)
        if pending:
            self._append(encode_entry(stream, bytes(pending), time_ns or time.time_ns()))

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

    def _append(self, data: bytes | bytearray) -> None:
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
            view = view[written:]
