"""A small async HTTP/1.1 client for the registry client: h11 for the framing, asyncio for I/O.

Why not aiohttp: ketchd keeps whatever it imports. aiohttp with yarl and multidict adds
about 14 MiB of RSS, and h11, which the API server already uses, about 0.6 MiB (measured as
``python -I -c "import asyncio, hashlib, ssl, aiohttp"`` against the same line without the
package, CPython 3.11). This module covers what the registry client needs and nothing more:

* a :class:`Session` with a pool of keep-alive connections per (scheme, host, port);
* TLS through ``ssl`` with the default verifying context, imported at the first https URL;
* a connect timeout and a read timeout (the maximum wait for the next bytes once the
  request is sent);
* redirects followed for GET and HEAD, with the Authorization header kept only when the
  redirect stays on the same scheme, host and port;
* request bodies as bytes, an async iterable of bytes or a binary file object, sent with
  Content-Length when it is known and with chunked transfer encoding otherwise;
* responses read as a whole (``read``) or chunk by chunk (``iter_chunks``).

It sends no Accept-Encoding header, so bodies arrive as the server stores them (identity),
and it reads no proxy settings from the environment.

Every failure of a connection, a timeout included, and every HTTP protocol error raises
:class:`HTTPClientError`.
"""

# Limitation: HTTP/1.1 only (no HTTP/2), no proxies, no cookies and no decoding of
# Content-Encoding, because registries need none of them.

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit

import h11

from ketch import deferred_ssl

if TYPE_CHECKING:
    import ssl

CONNECT_TIMEOUT_SECONDS = 30.0
READ_TIMEOUT_SECONDS = 120.0
# The maximum bytes one receive takes from a socket. asyncio's socket transport reads
# 256 KiB at a time by itself (CPython 3.11), and each chunk costs a round of callbacks on
# the event loop and a hand-off to the thread that unpacks a layer.
RECEIVE_SIZE = 1024 * 1024
# Past this many received bytes that no response has read yet, the connection stops
# reading the socket until the reader catches up.
MAX_BUFFERED = 4 * RECEIVE_SIZE
# The size of each read from a file object sent as a request body.
FILE_READ_SIZE = 1024 * 1024
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The maximum idle connections kept per (scheme, host, port). More are closed on release.
MAX_IDLE_PER_ORIGIN = 8
# A redirect's body up to this size is read, so that its connection can be reused.
MAX_DISCARDED_BODY = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}

RequestBody = bytes | bytearray | memoryview | AsyncIterable[bytes] | IO[bytes] | None
NameValuePairs = Mapping[str, str] | Sequence[tuple[str, str]]


class HTTPClientError(OSError):
    """A connection that failed, timed out or closed early, or a response that broke HTTP."""


@dataclass(frozen=True)
class Origin:
    """The (scheme, host, port) that a connection serves."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise HTTPClientError(f"invalid URL {url!r}: expected http:// or https:// and a host")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as error:
            raise HTTPClientError(f"invalid URL {url!r}: {error}") from None
        return cls(parts.scheme, parts.hostname, port)


class Headers(Mapping[str, str]):
    """Response headers with case-insensitive names. A repeated header maps to its first
    value, and ``get_all`` returns every value."""

    def __init__(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in items:
            self._values.setdefault(name.decode("ascii").lower(), []).append(
                value.decode("latin-1")
            )

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()][0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get_all(self, name: str) -> list[str]:
        return list(self._values.get(name.lower(), []))


class _Connection(asyncio.BufferedProtocol):
    """A connection over one socket. Received bytes queue up in chunks until a response reads them.

    The transport receives into a buffer of RECEIVE_SIZE bytes (over TLS, asyncio decrypts
    into it), and each chunk is copied out of it once.
    """

    def __init__(self, origin: Origin, read_timeout: float) -> None:
        self.origin = origin
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.received_any = False  # whether any response byte arrived for the current request
        self.closed_by_peer = False
        self._closing = False  # whether ketch closed it
        self._buffer = bytearray(RECEIVE_SIZE)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._eof = False
        self._error: BaseException | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False

    @property
    def is_closed(self) -> bool:
        return self._eof or self._error is not None or self.transport is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self._chunks.append(bytes(memoryview(self._buffer)[:nbytes]))
        self._buffered += nbytes
        if self._buffered > MAX_BUFFERED and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake(self._data_waiter)

    def eof_received(self) -> bool:
        self._eof = True
        self.closed_by_peer = not self._closing
        self._wake(self._data_waiter)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.closed_by_peer = self.closed_by_peer or not self._closing
        if exc is not None:
            self._error = exc
        self._wake(self._data_waiter)
        self._wake(self._drain_waiter)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake(self._drain_waiter)

    def start_request(self) -> None:
        self.received_any = False

    async def receive(self) -> bytes | None:
        """Return the next received chunk, or None at the end of the stream.

        Raises HTTPClientError when no byte arrives within the read timeout or the
        connection failed.
        """
        while not self._chunks:
            if self._error is not None:
                raise HTTPClientError(f"connection to {self._name()} failed: {self._error}")
            if self._eof:
                return None
            self._data_waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.read_timeout):
                    await self._data_waiter
            except TimeoutError:
                raise HTTPClientError(
                    f"no data from {self._name()} for {self.read_timeout:g} seconds"
                ) from None
            finally:
                self._data_waiter = None

        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        self.received_any = True
        if self._reading_paused and self._buffered <= MAX_BUFFERED // 2 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def wait_for_data(self, other: asyncio.Future[Any]) -> None:
        """Wait without a timeout until a chunk arrives, the stream ends or ``other`` is done."""
        if self._chunks or self._eof or self._error is not None:
            return
        self._data_waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait({self._data_waiter, other}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._data_waiter = None

    def has_unread_data(self) -> bool:
        return bool(self._chunks)

    async def write(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write ``pieces`` and wait while the transport's write buffer is full."""
        if self.is_closed or self.transport is None or self.transport.is_closing():
            raise HTTPClientError(f"connection to {self._name()} closed while sending")
        self.transport.writelines(pieces)
        while self._writing_paused and not self.is_closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.read_timeout):
                    await self._drain_waiter
            except TimeoutError:
                raise HTTPClientError(
                    f"sending to {self._name()} made no progress for {self.read_timeout:g} seconds"
                ) from None
            finally:
                self._drain_waiter = None
        if self._error is not None:
            raise HTTPClientError(f"connection to {self._name()} failed: {self._error}")

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()
        self._eof = True

    def abort(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.abort()
        self._eof = True

    def _name(self) -> str:
        return f"{self.origin.host}:{self.origin.port}"

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Response:
    """A response whose body is read from its connection on demand.

    ``release`` (or leaving ``async with``) returns the connection to the session's pool
    when the body was read to its end, and closes it otherwise.
    """

    def __init__(
        self,
        session: Session,
        connection: _Connection,
        parser: h11.Connection,
        event: h11.Response,
        url: str,
        method: str,
        upload: asyncio.Task[None] | None,
    ) -> None:
        self.status = event.status_code
        self.reason = event.reason.decode("latin-1")
        self.headers = Headers(event.headers)
        self.url = url
        self._session = session
        self._connection: _Connection | None = connection
        self._parser = parser
        self._upload = upload
        self._keep_alive = _keeps_alive(event)

        # Bodies with Content-Length, and those that end when the connection closes, are
        # read straight from the connection, so their bytes are not copied into h11's
        # buffer and out again. Only chunked bodies go through h11.
        self._chunked = "transfer-encoding" in self.headers
        self.content_length: int | None = None
        if not self._chunked and "content-length" in self.headers:
            # h11 has checked that the value is a number.
            self.content_length = int(self.headers["content-length"])
        self._remaining = self.content_length  # body bytes not received yet
        if method == "HEAD" or self.status in (204, 304):
            self._remaining = 0
        # Body bytes that arrived with the head, buffered in h11 but not parsed by it.
        self._early: bytes | None = None
        if not self._chunked:
            self._early = parser.trailing_data[0] or None
            if self._remaining == 0 and self._early is not None:
                self._keep_alive = False  # bytes after a response without a body
        self._unread: bytes | None = None  # received bytes that a read(limit) left over
        self._complete = self._remaining == 0

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    async def read(self, limit: int | None = None) -> bytes:
        """Read the body up to its end or up to ``limit`` bytes, whichever comes first."""
        parts: list[bytes] = []
        size = 0
        while limit is None or size < limit:
            chunk = await self._next_chunk()
            if chunk is None:
                break
            if limit is not None and size + len(chunk) > limit:
                self._unread = chunk[limit - size :]
                chunk = chunk[: limit - size]
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield the body in the chunks it arrived in, none of them empty."""
        while (chunk := await self._next_chunk()) is not None:
            yield chunk

    def release(self) -> None:
        """Return the connection to the pool if the body was read to its end, else close it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        upload_finished = self._upload is None or self._upload.done()
        if not upload_finished:
            assert self._upload is not None
            self._upload.cancel()  # the server responded before the whole body was sent
        reusable = (
            self._complete
            and self._unread is None
            and self._keep_alive
            and upload_finished
            and not connection.is_closed
            and not connection.has_unread_data()
        )
        if reusable:
            self._session._keep(connection)
        else:
            self._session._discard(connection)

    async def _next_chunk(self) -> bytes | None:
        if self._unread is not None:
            chunk, self._unread = self._unread, None
            return chunk
        if self._complete or self._connection is None:
            return None
        if self._chunked:
            return await self._next_chunked_piece(self._connection)
        return await self._next_raw_piece(self._connection)

    async def _next_raw_piece(self, connection: _Connection) -> bytes | None:
        if self._early is not None:
            chunk, self._early = self._early, None
        else:
            received = await connection.receive()
            if received is None:
                return self._end_of_stream()
            chunk = received

        if self._remaining is not None:
            if len(chunk) > self._remaining:
                # More bytes than Content-Length: the connection is out of step.
                self._keep_alive = False
                chunk = chunk[: self._remaining]
            self._remaining -= len(chunk)
            self._complete = self._remaining == 0
        return chunk

    def _end_of_stream(self) -> None:
        if self._remaining is None:
            # A body without Content-Length ends when the connection closes.
            self._complete = True
            self._keep_alive = False
            return None
        assert self.content_length is not None
        raise HTTPClientError(
            f"connection closed after {self.content_length - self._remaining} of "
            f"{self.content_length} body bytes from {self.url}"
        )

    async def _next_chunked_piece(self, connection: _Connection) -> bytes | None:
        while True:
            event = _next_event(self._parser, self.url)
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._complete = True
                if self._parser.trailing_data[0]:
                    self._keep_alive = False
                return None
            elif event is h11.NEED_DATA:
                received = await connection.receive()
                self._parser.receive_data(received or b"")
            else:
                raise HTTPClientError(f"unexpected HTTP event {event!r} from {self.url}")


class Session:
    """Requests over a pool of keep-alive connections, used with ``async with``.

    ``headers`` go with every request unless the request sets the same header.
    """

    def __init__(
        self,
        *,
        headers: NameValuePairs | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self.headers = _header_list(headers)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._ssl_context: ssl.SSLContext | None = None
        self._closed = False

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection of the session, idle or in use."""
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: NameValuePairs | None = None,
        headers: NameValuePairs | None = None,
        data: RequestBody = None,
        allow_redirects: bool = True,
    ) -> Response:
        """Send a request and return its response once the status line and headers arrived.

        ``params`` are appended to the URL's query. Redirects are followed for GET and HEAD
        unless ``allow_redirects`` is false. The caller must release the response.
        """
        method = method.upper()
        url = _with_params(url, params)
        request_headers = _merge_headers(self.headers, _header_list(headers))
        follow = allow_redirects and method in ("GET", "HEAD")

        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(method, url, request_headers, data)
            location = response.headers.get("Location")
            if not follow or response.status not in REDIRECT_STATUSES or location is None:
                return response

            await _discard_body(response)
            next_url = urljoin(response.url, location)
            if Origin.of(next_url) != Origin.of(url):
                # Credentials for the registry are not sent to another host, such as the
                # storage service that a registry redirects blob downloads to.
                request_headers = [
                    (n, v) for n, v in request_headers if n.lower() != "authorization"
                ]
            url = next_url
        raise HTTPClientError(f"more than {MAX_REDIRECTS} redirects for {method} {url}")

    async def _send(
        self, method: str, url: str, headers: list[tuple[str, str]], data: RequestBody
    ) -> Response:
        origin = Origin.of(url)
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(connection, method, url, headers, data)
            except HTTPClientError:
                # The server may have closed the idle connection just as the request went
                # out. Then a repeatable request without any byte of a response is sent
                # again on a new connection.
                stale = connection.closed_by_peer and not connection.received_any
                if not stale or not _is_repeatable(data):
                    raise
        connection = await self._connect(origin)
        return await self._exchange(connection, method, url, headers, data)

    async def _exchange(
        self,
        connection: _Connection,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        data: RequestBody,
    ) -> Response:
        parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
        connection.start_request()
        upload: asyncio.Task[None] | None = None
        try:
            request = _build_request(method, url, headers, data)
            await connection.write(parser.send_with_data_passthrough(request) or [])
            if data is not None:
                upload = asyncio.create_task(_send_body(connection, parser, data, url))
                # Its error reaches the caller through the response, so asyncio need not log it.
                upload.add_done_callback(_retrieve_error)
            else:
                await connection.write(parser.send_with_data_passthrough(h11.EndOfMessage()) or [])
            event = await _receive_head(connection, parser, url, upload)
        except BaseException:
            self._discard(connection)
            if upload is not None:
                upload.cancel()
            raise
        return Response(self, connection, parser, event, url, method, upload)

    async def _connect(self, origin: Origin) -> _Connection:
        if self._closed:
            raise HTTPClientError("the HTTP session is closed")
        loop = asyncio.get_running_loop()
        ssl_context = self._context() if origin.scheme == "https" else None
        server_hostname = origin.host if ssl_context is not None else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin, self.read_timeout),
                    origin.host,
                    origin.port,
                    ssl=ssl_context,
                    server_hostname=server_hostname,
                )
        except TimeoutError:
            raise HTTPClientError(
                f"connection to {origin.host}:{origin.port} timed out after "
                f"{self.connect_timeout:g} seconds"
            ) from None
        except OSError as error:
            # ssl.SSLError is an OSError too, so a failed certificate check ends up here.
            raise HTTPClientError(
                f"cannot connect to {origin.host}:{origin.port}: {error}"
            ) from None
        self._open.add(connection)
        return connection

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Only https URLs need it. ketchd leaves ssl out until then (see
            # ketch.deferred_ssl).
            ssl = deferred_ssl.load()
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin, [])
        while idle:
            connection = idle.pop()
            if not connection.is_closed and not connection.has_unread_data():
                return connection
            self._discard(connection)
        return None

    def _keep(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        if self._closed or len(idle) >= MAX_IDLE_PER_ORIGIN:
            self._discard(connection)
        else:
            idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)


async def _receive_head(
    connection: _Connection,
    parser: h11.Connection,
    url: str,
    upload: asyncio.Task[None] | None,
) -> h11.Response:
    """Feed received bytes to h11 until the final response head arrives, skipping 1xx."""
    while True:
        try:
            event = _next_event(parser, url)
        except HTTPClientError:
            _raise_upload_error(upload)
            raise
        if isinstance(event, h11.Response):
            return event
        if event is h11.NEED_DATA:
            try:
                if upload is not None and not upload.done():
                    # A server may respond only once it has the whole body, so the read
                    # timeout starts when the body is sent, as in aiohttp 3.14. An upload
                    # that the server stops reading fails on the write timeout instead.
                    await connection.wait_for_data(upload)
                received = await connection.receive()
                if received is None:
                    raise HTTPClientError(f"connection closed before the response to {url}")
            except HTTPClientError:
                _raise_upload_error(upload)
                raise
            parser.receive_data(received)
        elif not isinstance(event, h11.InformationalResponse):
            raise HTTPClientError(f"unexpected HTTP event {event!r} from {url}")


def _raise_upload_error(upload: asyncio.Task[None] | None) -> None:
    """Raise the error of a failed request body instead of the closed connection it
    caused, when the body's source failed (a file that ended early, for example)."""
    if upload is None or not upload.done() or upload.cancelled():
        return
    error = upload.exception()
    if error is not None and not isinstance(error, HTTPClientError):
        raise error


def _next_event(parser: h11.Connection, url: str) -> Any:
    try:
        return parser.next_event()
    except h11.RemoteProtocolError as error:
        raise HTTPClientError(f"invalid HTTP response from {url}: {error}") from None


async def _send_body(
    connection: _Connection, parser: h11.Connection, data: RequestBody, url: str
) -> None:
    """Send a request body, then its end. A source that fails aborts the connection,
    because the server would otherwise wait for the rest of the body."""
    try:
        async for piece in _body_pieces(data):
            if piece:
                await connection.write(
                    parser.send_with_data_passthrough(h11.Data(data=piece)) or []
                )
        await connection.write(parser.send_with_data_passthrough(h11.EndOfMessage()) or [])
    except h11.LocalProtocolError as error:
        connection.abort()
        raise HTTPClientError(
            f"request body for {url} does not match its headers: {error}"
        ) from None
    except HTTPClientError:
        raise
    except Exception:
        connection.abort()
        raise


async def _body_pieces(data: RequestBody) -> AsyncIterator[bytes | bytearray | memoryview]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield data
    elif isinstance(data, AsyncIterable):
        async for piece in data:
            yield piece
    elif data is not None:
        while piece := await asyncio.to_thread(data.read, FILE_READ_SIZE):
            yield piece


async def _discard_body(response: Response) -> None:
    """Read a small body to its end so that its connection can be reused, then release."""
    try:
        if response.content_length is not None and response.content_length <= MAX_DISCARDED_BODY:
            await response.read(MAX_DISCARDED_BODY)
    finally:
        response.release()


def _build_request(
    method: str, url: str, headers: list[tuple[str, str]], data: RequestBody
) -> h11.Request:
    """Build the request head. A URL or header that HTTP/1.1 cannot carry, such as a
    redirect's Location with a space or a non-ASCII character, raises HTTPClientError."""
    try:
        return h11.Request(
            method=method,
            target=_target(url),
            headers=_request_headers(method, url, headers, data),
        )
    except (h11.LocalProtocolError, UnicodeEncodeError) as error:
        raise HTTPClientError(f"invalid request to {url}: {error}") from None


def _request_headers(
    method: str, url: str, headers: list[tuple[str, str]], data: RequestBody
) -> list[tuple[str, str]]:
    """Add Host and, for a body, Content-Length when known or chunked framing otherwise."""
    names = {name.lower() for name, _ in headers}
    result = list(headers)
    if "host" not in names:
        result.insert(0, ("Host", _host_header(url)))
    if "content-length" in names or "transfer-encoding" in names:
        return result
    if data is None:
        if method in ("POST", "PUT", "PATCH"):
            # Servers may reject these methods without a length (411 Length Required).
            result.append(("Content-Length", "0"))
    elif isinstance(data, bytes | bytearray | memoryview):
        result.append(("Content-Length", str(len(data))))
    else:
        result.append(("Transfer-Encoding", "chunked"))
    return result


def _host_header(url: str) -> str:
    origin = Origin.of(url)
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    if origin.port == DEFAULT_PORTS[origin.scheme]:
        return host
    return f"{host}:{origin.port}"


def _target(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _with_params(url: str, params: NameValuePairs | None) -> str:
    if not params:
        return url
    query = urlencode(list(params.items()) if isinstance(params, Mapping) else list(params))
    base, _, fragment = url.partition("#")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}{query}"


def _header_list(headers: NameValuePairs | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def _merge_headers(
    defaults: list[tuple[str, str]], overrides: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    overridden = {name.lower() for name, _ in overrides}
    return [(n, v) for n, v in defaults if n.lower() not in overridden] + overrides


def _keeps_alive(event: h11.Response) -> bool:
    """Return whether the server keeps the connection open after this response."""
    if event.http_version != b"1.1":
        return False
    for name, value in event.headers:
        if name == b"connection" and b"close" in value.lower().replace(b" ", b"").split(b","):
            return False
    return True


def _retrieve_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _is_repeatable(data: RequestBody) -> bool:
    return data is None or isinstance(data, bytes | bytearray | memoryview)
