"""One client connection of the API server: h11 for the HTTP/1.1 framing, asyncio for I/O.

A connection carries requests one after another (keep-alive). For each request the route
replies in one of four ways:

- ``send`` / ``send_json``: a whole body with a Content-Length;
- ``start_stream``, ``send_chunk``..., ``end_stream``: a chunked body written as results
  arrive (image pull progress, the result of a wait);
- ``hijack``: the status line and headers are written by hand, and then the socket
  carries raw bytes (attach), as with dockerd. The connection is not reused afterwards.
- nothing at all, when the server reports an error for it.

A request body is read whole before the route runs. JSON bodies are kept in memory and
capped at ``MAX_BODY_BYTES``. The tarballs of ``POST /images/load`` and of an import can
be gigabytes, so for the routes that ``spools_body`` selects the body goes to an unlinked
temporary file in ``spool_dir`` instead, bounded only by the disk. The file is created
and written by the loop's default executor, in chunks of ``SPOOL_CHUNK_BYTES``, so a slow
disk does not stall the other connections.

Every reply carries the headers dockerd puts on all of its replies (``Api-Version``,
``Ostype``, ``Docker-Experimental``, ``Server``); docker-py and the docker CLI read the
API version from them.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import select
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from ketch import __version__
from ketch.api import API_VERSION
from ketch.errors import InvalidArgument

log = logging.getLogger(__name__)

READ_SIZE = 65536
# Create bodies are a few kilobytes; a limit stops one client from filling the daemon's memory.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
# A spooled body is handed to an executor thread in chunks of this size: large enough that
# the hand-off costs little next to the write, small enough to bound each connection's
# buffer.
SPOOL_CHUNK_BYTES = 1024 * 1024

COMMON_HEADERS: tuple[tuple[str, str], ...] = (
    ("Api-Version", API_VERSION),
    ("Docker-Experimental", "false"),
    ("Ostype", "linux"),
    ("Server", f"ketch/{__version__} (linux)"),
)


class BodyTooLarge(Exception):
    """The request body is larger than MAX_BODY_BYTES."""


@dataclass
class Request:
    """One HTTP request with its whole body.

    The body is either in ``body`` or, for a spooled route, in ``body_file`` (an
    unlinked temporary file at offset 0, closed by the server after the reply).
    """

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    body_file: IO[bytes] | None = field(default=None, repr=False)

    def has_body(self) -> bool:
        """Return whether the request carries a non-empty body."""
        return bool(self.body) or self.body_file is not None

    def body_stream(self) -> IO[bytes]:
        """Return the body as a binary file object positioned at its start."""
        if self.body_file is not None:
            return self.body_file
        return io.BytesIO(self.body)

    def close(self) -> None:
        """Delete the spooled body, if any."""
        if self.body_file is not None:
            self.body_file.close()

    @property
    def path(self) -> str:
        """The target's path, still percent-encoded."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; a repeated name keeps its first value, as dockerd's does."""
        parameters: dict[str, str] = {}
        for name, value in parse_qsl(urlsplit(self.target).query, keep_blank_values=True):
            parameters.setdefault(name, value)
        return parameters

    @property
    def wants_upgrade(self) -> bool:
        """Whether the client asked for a hijacked connection (``Upgrade: tcp``)."""
        connection = self.headers.get("connection", "").lower()
        upgrade = self.headers.get("upgrade", "").lower()
        return "upgrade" in connection and upgrade == "tcp"

    def json_body(self) -> Any:
        """Decode the body as JSON; None for an empty body.

        Raises InvalidArgument naming the decoding problem.
        """
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InvalidArgument(f"invalid JSON in request body: {error}") from None


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class BodySpool:
    """A request body written to an unlinked temporary file by the loop's executor.

    One file operation runs at a time and each is awaited before the next, so the file
    contains the body in the order it arrived.
    """

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._file: IO[bytes] | None = None
        self._buffer = bytearray()
        # The executor's current operation, shielded so that a cancelled read leaves it
        # running and ``close`` can wait for it.
        self._pending: asyncio.Future[Any] | None = None

    async def add(self, data: bytes) -> None:
        """Append ``data``, writing the buffer out once it reaches SPOOL_CHUNK_BYTES."""
        self._buffer += data
        if len(self._buffer) >= SPOOL_CHUNK_BYTES:
            await self._write_buffer()

    async def finish(self) -> IO[bytes]:
        """Write the rest of the body and return the file, positioned at its start."""
        await self._write_buffer()
        file = self._file
        assert file is not None
        await self._run(file.seek, 0)
        return file

    def close(self) -> None:
        """Close the file, once the executor's current operation on it has ended."""
        pending = self._pending
        if pending is not None and not pending.done():
            pending.add_done_callback(self._close_after)
            return
        self._close_file()

    def _close_after(self, operation: asyncio.Future[Any]) -> None:
        error = None if operation.cancelled() else operation.exception()
        if error is not None:
            # The read that awaited this operation was cancelled, so only this callback
            # retrieves the error.
            log.warning("failed to spool a request body after its read was cancelled: %s", error)
        self._close_file()

    async def _write_buffer(self) -> None:
        if self._file is None:
            await self._run(self._open)
        chunk, self._buffer = self._buffer, bytearray()
        if chunk:
            assert self._file is not None
            await self._run(self._file.write, chunk)

    def _open(self) -> None:
        self._file = tempfile.TemporaryFile(dir=self._directory)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, functools.partial(function, *args))
        return await asyncio.shield(self._pending)


SpoolPredicate = Callable[[str, str], bool]


def _spools_nothing(method: str, target: str) -> bool:
    return False


class HttpConnection:
    """The server's side of one client connection.

    ``spools_body(method, target)`` selects the requests whose body goes to a temporary
    file in ``spool_dir`` (the system's temporary directory when None) without a size cap.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        spools_body: SpoolPredicate = _spools_nothing,
        spool_dir: Path | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._spools_body = spools_body
        self._spool_dir = spool_dir
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._method = ""
        self.response_status: int | None = None
        self.response_started = False
        self.hijacked = False
        self.must_close = False

    async def read_request(self) -> Request | None:
        """Read the next request and its whole body; None once the client has closed.

        Raises h11.RemoteProtocolError for malformed HTTP and BodyTooLarge.
        """
        request: h11.Request | None = None
        body = bytearray()
        spool: BodySpool | None = None
        spooled = False
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    await self._continue_if_expected()
                    self._h11.receive_data(await self._reader.read(READ_SIZE))
                elif isinstance(event, h11.Request):
                    request = event
                    spooled = self._spools(event)
                elif isinstance(event, h11.Data) and request is not None:
                    if spool is None and spooled:
                        spool = BodySpool(self._spool_dir)
                    if spool is not None:
                        await spool.add(event.data)
                        continue
                    body += event.data
                    if len(body) > MAX_BODY_BYTES:
                        raise BodyTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    body_file = await spool.finish() if spool is not None else None
                    return self._make_request(request, bytes(body), body_file)
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    if spool is not None:
                        spool.close()
                    return None
        except BaseException:
            if spool is not None:
                spool.close()
            raise

    async def _continue_if_expected(self) -> None:
        if self._h11.they_are_waiting_for_100_continue:
            # curl sends "Expect: 100-continue" for larger bodies and waits for this.
            await self._write(
                self._h11.send(
                    h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                )
            )

    def _spools(self, event: h11.Request) -> bool:
        method = event.method.decode("ascii")
        return self._spools_body(method, event.target.decode("latin-1"))

    def _make_request(
        self, event: h11.Request, body: bytes, body_file: IO[bytes] | None
    ) -> Request:
        self._method = event.method.decode("ascii")
        self.response_status = None
        self.response_started = False
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers
        }
        target = event.target.decode("latin-1")
        return Request(self._method, target, headers, body, body_file)

    def _response_headers(
        self, content_type: str | None, extra: tuple[tuple[str, str], ...]
    ) -> list[tuple[str, str]]:
        headers = list(COMMON_HEADERS)
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        headers.extend(extra)
        return headers

    async def send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str | None = "application/json",
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Send a complete reply. 204 and 304 replies carry no body and no Content-Type."""
        no_body = status in (204, 304)
        headers = self._response_headers(None if no_body else content_type, extra_headers)
        if not no_body:
            headers.append(("Content-Length", str(len(body))))
        self.response_started = True
        self.response_status = status
        data = self._h11.send(
            h11.Response(status_code=status, headers=headers, reason=_reason(status))
        )
        if body and not no_body and self._method != "HEAD":
            data += self._h11.send(h11.Data(data=body))
        data += self._h11.send(h11.EndOfMessage())
        await self._write(data)

    async def send_json(self, status: int, value: Any) -> None:
        """Send a reply whose body is ``value`` encoded as JSON."""
        await self.send(status, json.dumps(value).encode() + b"\n")

    async def start_stream(
        self,
        status: int,
        content_type: str = "application/json",
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Send the status line and headers of a chunked reply at once."""
        headers = self._response_headers(content_type, extra_headers)
        self.response_started = True
        self.response_status = status
        response = h11.Response(status_code=status, headers=headers, reason=_reason(status))
        await self._write(self._h11.send(response))

    async def send_chunk(self, data: bytes) -> None:
        """Send one chunk of a streamed reply and wait until the socket has taken it."""
        if data:
            await self._write(self._h11.send(h11.Data(data=data)))

    async def end_stream(self) -> None:
        """Finish a streamed reply."""
        await self._write(self._h11.send(h11.EndOfMessage()))

    async def hijack(self, upgrade: bool, content_type: str) -> asyncio.StreamWriter:
        """Take the socket over from HTTP and return its writer for raw bytes.

        With ``upgrade`` the reply is ``101 UPGRADED``, which dockerd sends to clients that
        request ``Upgrade: tcp``. Without it the reply is a ``200 OK`` whose body runs
        until the connection closes.
        """
        if upgrade:
            status_line = "HTTP/1.1 101 UPGRADED"
            extra = (("Connection", "Upgrade"), ("Upgrade", "tcp"))
        else:
            status_line = "HTTP/1.1 200 OK"
            extra = (("Connection", "close"),)
        headers = self._response_headers(content_type, extra)
        head = status_line + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers)
        self.response_started = True
        self.response_status = 101 if upgrade else 200
        self.hijacked = True
        await self._write(head.encode("latin-1") + b"\r\n")
        return self._writer

    async def wait_until_client_closes(self) -> None:
        """Return once the client has closed its side of the connection.

        Bytes that arrive meanwhile (a pipelined next request) go to h11's buffer, so
        nothing is lost when the connection carries on.
        """
        while True:
            data = await self._reader.read(READ_SIZE)
            if not data:
                return
            self._h11.receive_data(data)

    def take_buffered_input(self) -> bytes:
        """Return the bytes the client sent after the request, which a hijacked stream
        (an attach or exec with stdin) carries on with."""
        data, _ = self._h11.trailing_data
        return data

    @property
    def reader(self) -> asyncio.StreamReader:
        """The socket's reader, for the client's bytes once the connection is hijacked."""
        return self._reader

    def peer_hung_up(self) -> bool:
        """Return whether the client has closed the socket completely, not just its sending
        side.

        Both look the same to a read (end of file), but on Linux a unix socket whose peer
        has closed reports POLLHUP, and one whose peer only called shutdown(SHUT_WR) does
        not. The docker CLI shuts its sending side down right after an attach without
        stdin, so an end of file alone must not end the attach.
        """
        sock = self._writer.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLHUP)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    def start_next_request(self) -> bool:
        """Prepare the connection for another request after the current reply; return
        False when it must be closed instead."""
        if self.must_close or self.hijacked:
            return False
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    async def send_protocol_error(self, status: int, message: str) -> None:
        """Reply to a request that h11 could not parse, if HTTP still allows a reply."""
        self.must_close = True
        body = json.dumps({"message": message}).encode()
        headers = self._response_headers("application/json", (("Content-Length", str(len(body))),))
        try:
            data = self._h11.send(
                h11.Response(status_code=status, headers=headers, reason=_reason(status))
            )
            data += self._h11.send(h11.Data(data=body)) + self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await self._write(data)

    async def _write(self, data: bytes | None) -> None:
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def close(self) -> None:
        """Close the socket; errors from a client that already went away are ignored."""
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError) as error:
            log.debug("closing an API connection: %s", error)


def decode_path_parameter(value: str) -> str:
    """Percent-decode one path segment matched by a route (an image name may hold ``%2F``)."""
    return unquote(value)
