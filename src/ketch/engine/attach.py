"""Attach streams: a container's output as docker's multiplexed frames, for
``POST /containers/{id}/attach``.

The docker CLI attaches before it starts the container, but the supervisor has no record
of a container until ``start``. So an attach to a container that is not running is kept
*pending*: the engine hands the API a reader at once, and when the container starts,
:meth:`AttachHub.connect_pending` (called between the supervisor's ``create`` and
``start``, while the init is parked) attaches each pending reader to the supervisor's
stream, so not a byte of output is missed.

Each stream is copied into the reader the API holds by a pump task. The pump follows the
reader's own flow control (``StreamReader`` pauses its transport above twice its limit),
so a slow client holds back the supervisor's stream instead of growing ketchd's memory;
the supervisor then drops that client once it is far behind, and the log keeps every byte.

``logs=True`` replays the json-file log as frames before the live stream.

An attach with stdin gets a :class:`StdinFeed`: the API writes the client's bytes into it
at once, and they wait there until the stream is connected. For a container with a TTY
the supervisor's frames are unwrapped into the raw bytes Docker sends in TTY mode. The
client's end of stdin closes the container's stdin only with ``StdinOnce`` and without a
TTY, as in dockerd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ketch.errors import KetchError

logger = logging.getLogger(__name__)

STREAM_LIMIT = 64 * 1024
FRAME_HEADER = struct.Struct(">BxxxI")
STREAM_TYPES = {"stdout": 1, "stderr": 2}


class AttachSource(Protocol):
    async def attach(
        self, container_id: str, stdout: bool = True, stderr: bool = True
    ) -> asyncio.StreamReader: ...

    async def attach_with_stdin(
        self,
        container_id: str,
        stdout: bool = True,
        stderr: bool = True,
        *,
        stdin: bool = True,
        close_stdin: bool = True,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


class StdinFeed:
    """The client's bytes for a container's stdin, queued until the attach is connected.

    It has the writer methods the API's copy uses (write, drain, write_eof).
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def write(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    async def drain(self) -> None:
        # Back-pressure comes from the supervisor's stdin pipe once connected.
        await asyncio.sleep(0)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.queue.put_nowait(None)


class _FlowControl:
    """The transport a StreamReader pauses and resumes; the pump waits while it is paused."""

    def __init__(self) -> None:
        self.resumed = asyncio.Event()
        self.resumed.set()

    def pause_reading(self) -> None:
        self.resumed.clear()

    def resume_reading(self) -> None:
        self.resumed.set()


class AttachReader(asyncio.StreamReader):
    """The output of an attach for the API; ``stdin`` is set when the attach has stdin."""

    stdin: StdinFeed | None = None
    attachment: _Attachment | None = None

    def detach(self) -> None:
        """End this attach early (the client left or detached); the container runs on."""
        attachment = self.attachment
        if attachment is None:
            return
        for task in (attachment.pump, attachment.feeder):
            if task is not None:
                task.cancel()


@dataclass(eq=False)
class _Attachment:
    reader: AttachReader
    flow: _FlowControl
    stdout: bool
    stderr: bool
    pump: asyncio.Task[None] | None = None
    raw: bool = False
    stdin: StdinFeed | None = None
    close_stdin: bool = True
    feeder: asyncio.Task[None] | None = None


def frame(stream: int, payload: bytes) -> bytes:
    """Wrap ``payload`` in the multiplexed stream header (type, 3 zero bytes, length)."""
    return FRAME_HEADER.pack(stream, len(payload)) + payload


def log_frames(log_path: Path, stdout: bool, stderr: bool) -> list[bytes]:
    """Return the frames of a json-file log, keeping only the requested streams."""
    requested = {name for name, keep in (("stdout", stdout), ("stderr", stderr)) if keep}
    frames = []
    try:
        stream = log_path.open("rb")
    except FileNotFoundError:
        return []
    # Limitation: the whole log is framed in memory before it is sent.
    with stream:
        for line in stream:
            try:
                entry: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash of the writer
            name = entry.get("stream")
            if name in requested and isinstance(entry.get("log"), str):
                frames.append(frame(STREAM_TYPES[name], entry["log"].encode()))
    return frames


class AttachHub:
    """Attach streams by container id: pending ones and the pumps of connected ones."""

    def __init__(self, supervisor: AttachSource) -> None:
        self._supervisor = supervisor
        self._pending: dict[str, list[_Attachment]] = {}
        self._active: dict[str, set[_Attachment]] = {}

    def _new_attachment(self, stdout: bool, stderr: bool) -> _Attachment:
        reader = AttachReader(limit=STREAM_LIMIT)
        flow = _FlowControl()
        reader.set_transport(flow)  # type: ignore[arg-type]
        return _Attachment(reader, flow, stdout, stderr)

    def open(
        self,
        container_id: str,
        *,
        stdout: bool,
        stderr: bool,
        replay: list[bytes],
        raw: bool = False,
        stdin: bool = False,
        close_stdin: bool = True,
    ) -> tuple[AttachReader, _Attachment]:
        """Make a reader for the API with ``replay`` frames already in it."""
        attachment = self._new_attachment(stdout, stderr)
        attachment.reader.attachment = attachment
        attachment.raw = raw
        attachment.close_stdin = close_stdin
        if stdin:
            attachment.stdin = StdinFeed()
            attachment.reader.stdin = attachment.stdin
        for chunk in replay:
            attachment.reader.feed_data(_unframe(chunk) if raw else chunk)
        return attachment.reader, attachment

    def add_pending(self, container_id: str, attachment: _Attachment) -> None:
        """Keep ``attachment`` until the container's next start."""
        self._pending.setdefault(container_id, []).append(attachment)

    async def connect(self, container_id: str, attachment: _Attachment) -> None:
        """Attach to the supervisor's stream of a created or running container."""
        if attachment.stdin is not None:
            source, writer = await self._supervisor.attach_with_stdin(
                container_id,
                stdout=attachment.stdout,
                stderr=attachment.stderr,
                close_stdin=attachment.close_stdin,
            )
            attachment.feeder = asyncio.create_task(_feed_stdin(attachment.stdin, writer))
        else:
            source = await self._supervisor.attach(
                container_id, stdout=attachment.stdout, stderr=attachment.stderr
            )
        attachment.pump = asyncio.create_task(self._pump(container_id, source, attachment))
        self._active.setdefault(container_id, set()).add(attachment)

    async def connect_pending(self, container_id: str) -> None:
        """Connect every pending reader of the container; call while its init is parked."""
        for attachment in self._pending.pop(container_id, []):
            if attachment.reader.at_eof():
                continue
            try:
                await self.connect(container_id, attachment)
            except KetchError as error:
                logger.warning("cannot attach to container %s: %s", container_id, error)
                attachment.reader.feed_eof()

    def end_pending(self, container_id: str) -> None:
        """End the pending readers of a container that will not start now."""
        for attachment in self._pending.pop(container_id, []):
            attachment.reader.feed_eof()

    def close(self, container_id: str) -> None:
        """End every stream of a removed container."""
        self.end_pending(container_id)
        for attachment in self._active.pop(container_id, set()):
            if attachment.pump is not None:
                attachment.pump.cancel()
            attachment.reader.feed_eof()

    async def _pump(
        self, container_id: str, source: asyncio.StreamReader, attachment: _Attachment
    ) -> None:
        pending = b""
        try:
            while chunk := await source.read(STREAM_LIMIT):
                if attachment.raw:
                    chunk, pending = frame_payloads(pending + chunk)
                attachment.reader.feed_data(chunk)
                await attachment.flow.resumed.wait()
        except (ConnectionError, KetchError) as error:
            logger.warning("attach stream of container %s broke: %s", container_id, error)
        finally:
            if attachment.feeder is not None:
                attachment.feeder.cancel()
            close = getattr(source, "close", None)
            if close is not None:
                close()  # detach from the supervisor, also when the pump was cancelled
            with contextlib.suppress(RuntimeError):
                attachment.reader.feed_eof()
            self._active.get(container_id, set()).discard(attachment)


def frame_payloads(data: bytes) -> tuple[bytes, bytes]:
    """Return the payloads of the whole frames in ``data`` and the incomplete rest."""
    out = bytearray()
    offset = 0
    while len(data) - offset >= FRAME_HEADER.size:
        _, length = FRAME_HEADER.unpack_from(data, offset)
        end = offset + FRAME_HEADER.size + length
        if end > len(data):
            break
        out += data[offset + FRAME_HEADER.size : end]
        offset = end
    return bytes(out), data[offset:]


def _unframe(chunk: bytes) -> bytes:
    return frame_payloads(chunk)[0]


async def _feed_stdin(feed: StdinFeed, writer: asyncio.StreamWriter) -> None:
    """Copy queued client bytes to the supervisor's stdin stream until the client's EOF."""
    try:
        while (data := await feed.queue.get()) is not None:
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError) as error:
        logger.debug("stdin of an attach ended: %s", error)
