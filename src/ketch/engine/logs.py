"""Reading a container's json-file log for ``GET /containers/{id}/logs``.

The supervisor writes the log (see ``ketch.supervisor.logs``) and rotates it:
``<id>-json.log`` is the newest file and ``<id>-json.log.1``, ``.2`` ... are older ones.
A read goes through the rotated files from the oldest, then the current file. It keeps
the entries of the requested streams from ``since`` to ``until`` (both inclusive), and
of those the last ``tail``.

With ``follow`` the current file stays open and is polled for new entries until the
container is no longer running and the file has been read to its end. The engine records
an exit only after the supervisor has written the container's last output, so nothing
written before the exit is missed. A rotation while following shows up as a new inode at
the log's path: the old file is read to its end, then the new one from its start. A
truncation (``max-file`` 1) shows up as a size below the read offset and restarts the read
at offset 0.

Each selected entry becomes one Engine API frame (stream type 1 or 2, three zero bytes,
big-endian length) or, for a container with a TTY, its raw bytes. With ``timestamps``
every entry's payload starts with its time in RFC 3339 with nine fraction digits and a
space, as dockerd writes it.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ketch.errors import InvalidArgument

logger = logging.getLogger(__name__)

FRAME_HEADER = struct.Struct(">BxxxI")
STREAM_TYPES = {"stdout": 1, "stderr": 2}

# How often a follow checks the log for new entries and the container for its exit.
FOLLOW_POLL_SECONDS = 0.1

# Bytes gathered before a piece of the reply is handed to the API.
BATCH_BYTES = 64 * 1024

READ_SIZE = 64 * 1024

_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")
_UNIX_TIME = re.compile(r"^(-?\d+)(?:\.(\d{1,9}))?$")


@dataclass(frozen=True)
class LogQuery:
    """A log request: the streams, the time window (ns since the epoch, 0 for none), the
    last ``tail`` entries (-1 for all), and the output form."""

    stdout: bool = True
    stderr: bool = True
    since_ns: int = 0
    until_ns: int = 0
    tail: int = -1
    timestamps: bool = False
    follow: bool = False
    raw: bool = False


@dataclass(frozen=True)
class LogEntry:
    stream: str
    payload: bytes
    time_ns: int


def parse_unix_time(text: str, name: str) -> int:
    """Parse the API's ``since``/``until`` form, ``seconds[.nanoseconds]``, into ns."""
    match = _UNIX_TIME.match(text.strip())
    if match is None:
        raise InvalidArgument(
            f"invalid value for {name!r}: {text!r}; expected a Unix time in seconds, "
            "such as 1700000000 or 1700000000.5"
        )
    seconds, fraction = match.groups()
    nanoseconds = int((fraction or "").ljust(9, "0"))
    if seconds.startswith("-"):
        return int(seconds) * 1_000_000_000 - nanoseconds
    return int(seconds) * 1_000_000_000 + nanoseconds


def parse_tail(text: str) -> int:
    """Parse ``tail``: a count of entries, or ``all`` (or nothing) for every entry."""
    value = text.strip()
    if value in ("", "all"):
        return -1
    if not value.isdigit():
        raise InvalidArgument(f"invalid value for 'tail': {text!r}; expected a number or 'all'")
    return int(value)


def parse_time_ns(text: str) -> int | None:
    """Parse a json-file ``time`` (RFC 3339 UTC) into ns; None when it is not one."""
    match = _TIME.match(text)
    if match is None:
        return None
    # Imported on first use, so that ketchd does not keep calendar loaded before a log read.
    import calendar

    year, month, day, hour, minute, second, fraction = match.groups()
    seconds = calendar.timegm(
        (int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0)
    )
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def format_fixed_ns(time_ns: int) -> str:
    """Format ns since the epoch as RFC 3339 UTC with nine fraction digits (Go's
    RFC3339NanoFixed, which ``docker logs -t`` prints)."""
    seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
    return f"{_format_seconds(seconds)}.{nanoseconds:09d}Z"


def _format_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_entry(line: bytes) -> LogEntry | None:
    """Decode one json-file line; None for a line that is not a complete entry."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    stream, payload, time_text = record.get("stream"), record.get("log"), record.get("time")
    if stream not in STREAM_TYPES or not isinstance(payload, str):
        return None
    time_ns = parse_time_ns(time_text) if isinstance(time_text, str) else None
    return LogEntry(stream, payload.encode(), time_ns or 0)


def rotated_files(path: Path) -> list[Path]:
    """Return the rotated files of a log, oldest first (``.3``, ``.2``, ``.1``)."""
    prefix = path.name + "."
    numbered = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    for name in names:
        suffix = name[len(prefix) :] if name.startswith(prefix) else ""
        if suffix.isdigit():
            numbered.append((int(suffix), path.parent / name))
    return [file for _, file in sorted(numbered, reverse=True)]


def encode_entry(entry: LogEntry, query: LogQuery) -> bytes:
    """Return an entry as the reply carries it: a frame, or raw bytes for a TTY."""
    payload = entry.payload
    if query.timestamps:
        payload = format_fixed_ns(entry.time_ns).encode() + b" " + payload
    if query.raw:
        return payload
    return FRAME_HEADER.pack(STREAM_TYPES[entry.stream], len(payload)) + payload


class _Selector:
    """Applies a query's streams and time window to entries in log order."""

    def __init__(self, query: LogQuery) -> None:
        self.query = query
        self.streams = {
            name for name, keep in (("stdout", query.stdout), ("stderr", query.stderr)) if keep
        }
        self.past_until = False

    def select(self, entries: Iterable[LogEntry]) -> Iterator[LogEntry]:
        for entry in entries:
            if self.query.until_ns and entry.time_ns > self.query.until_ns:
                self.past_until = True
                return
            if entry.stream not in self.streams:
                continue
            if self.query.since_ns and entry.time_ns < self.query.since_ns:
                continue
            yield entry


class _OpenLog:
    """One open log file read line by line from an offset, keeping a partial last line."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0
        self.inode = os.fstat(fd).st_ino
        self._partial = b""

    def read_entries(self) -> list[LogEntry]:
        """Read what was appended since the last call and return its complete entries."""
        return list(self.iter_entries())

    def iter_entries(self) -> Iterator[LogEntry]:
        """Yield the complete entries appended since the last read, reading in pieces."""
        if os.fstat(self.fd).st_size < self.offset:
            self.offset = 0  # truncated by a rotation with max-file 1
            self._partial = b""
        while True:
            data = os.pread(self.fd, READ_SIZE, self.offset)
            if not data:
                return
            self.offset += len(data)
            text = self._partial + data
            end = text.rfind(b"\n") + 1
            self._partial = text[end:]
            for line in text[:end].splitlines():
                entry = parse_entry(line)
                if entry is not None:
                    yield entry

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open(path: Path) -> _OpenLog | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    return _OpenLog(fd)


def _read_file(path: Path) -> Iterator[LogEntry]:
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        return  # removed by a rotation meanwhile
    with stream:
        for line in stream:
            entry = parse_entry(line)
            if entry is not None:
                yield entry


def _older_entries(path: Path, current: _OpenLog | None) -> Iterator[LogEntry]:
    """Entries of the rotated files that precede the open current file."""
    for file in rotated_files(path):
        try:
            inode = file.stat().st_ino
        except FileNotFoundError:
            continue
        if current is not None and inode == current.inode:
            continue  # rotated after it was opened: it is read as the current file
        yield from _read_file(file)


def _batches(encoded: Iterable[bytes]) -> Iterator[bytes]:
    batch: list[bytes] = []
    size = 0
    for piece in encoded:
        batch.append(piece)
        size += len(piece)
        if size >= BATCH_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


async def read_log(
    path: Path, query: LogQuery, is_running: Callable[[], bool]
) -> AsyncIterator[bytes]:
    """Yield the reply's bytes for ``query`` in batches; with ``follow``, until the
    container stops (``is_running`` returns False) and its log is read to the end."""
    current = _open(path)
    try:
        selector = _Selector(query)
        existing = _older_entries(path, current)
        if current is not None:
            existing = itertools.chain(existing, current.iter_entries())
        selected: Iterable[LogEntry] = selector.select(existing)
        if query.tail >= 0:
            selected = collections.deque(selected, maxlen=query.tail) if query.tail else ()
        for batch in _batches(encode_entry(entry, query) for entry in selected):
            yield batch
            await asyncio.sleep(0)
        if query.follow and not selector.past_until:
            async for batch in _follow(path, current, selector, is_running):
                yield batch
    finally:
        if current is not None:
            current.close()


async def _follow(
    path: Path, current: _OpenLog | None, selector: _Selector, is_running: Callable[[], bool]
) -> AsyncIterator[bytes]:
    try:
        while True:
            # Checked before the read, so that the read after an exit sees the whole log.
            running = is_running()
            entries, current = _read_new_entries(path, current)
            data = b"".join(encode_entry(e, selector.query) for e in selector.select(entries))
            if data:
                yield data
            if selector.past_until or not running:
                return
            if selector.query.until_ns and _now_ns() > selector.query.until_ns:
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
    finally:
        if current is not None:
            current.close()


def _read_new_entries(
    path: Path, current: _OpenLog | None
) -> tuple[list[LogEntry], _OpenLog | None]:
    """Read new entries, moving on to a new file when the log was rotated."""
    entries: list[LogEntry] = []
    while True:
        if current is not None:
            entries += current.read_entries()
        try:
            inode = path.stat().st_ino
        except FileNotFoundError:
            return entries, current
        if current is not None and inode == current.inode:
            return entries, current
        # A new file at the path: the open one was rotated away and is complete, because
        # the writer renames it before it opens the new one. Read it once more, then any
        # files rotated after it, then switch to the new one.
        if current is not None:
            entries += current.read_entries()
            for file in _files_rotated_after(path, current.inode):
                entries += _read_file(file)
            current.close()
        current = _open(path)
        if current is None:
            return entries, None


def _files_rotated_after(path: Path, inode: int) -> list[Path]:
    """Return the rotated files newer than the one with ``inode``, oldest first."""
    files = rotated_files(path)
    for index, file in enumerate(files):
        try:
            if file.stat().st_ino == inode:
                return files[index + 1 :]
        except FileNotFoundError:
            continue
    # The file was rotated out of existence, so every rotated file left is newer. Files
    # that were removed with it between two polls are lost to this reader.
    return files


def _now_ns() -> int:
    return time.time_ns()
