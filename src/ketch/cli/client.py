"""A small blocking HTTP/1.1 client for the Engine API on a unix socket, with hijack.

Each request opens its own connection and requests that the daemon close it after the
reply (``Connection: close``), so no state is kept between requests. A reply's status line and
headers are read before ``request`` returns; the body is read on demand, which ``run``
needs: it reads the headers of ``POST /wait`` (the waiter is registered) before it
starts the container and reads the body (the exit status) after the output has ended.
``hijack`` returns the raw socket after a ``101 UPGRADED`` (or ``200``) reply to attach.

The framing is parsed here rather than with h11, which the server uses: importing h11
took 29 ms of a 60 ms ``ketch ps`` (``python -X importtime`` with the venv's Python 3.11
on the 2-core build machine), because it pulls in ``dataclasses``, ``inspect`` and
``ast``. A client of one known daemon needs only status line, headers, Content-Length,
chunked and close-delimited bodies.

Requests go to ``/v1.41/...``: every route the CLI uses exists in 1.41, and 1.41 is the
newest version Debian's dockerd 20.10 serves, so the CLI works against ketchd and dockerd.
"""

from __future__ import annotations

import json
import os
import socket

from ketch import __version__
from ketch.cli.errors import ApiError, DaemonUnreachable, ProtocolFailure, StreamError

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO

API_VERSION = "1.41"
READ_SIZE = 65536
MAX_HEAD_BYTES = 64 * 1024
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def socket_path_of(host: str) -> str:
    """Return the socket path of a ``unix://PATH`` host; UsageError for other schemes."""
    from ketch.cli.errors import UsageError

    scheme, separator, path = host.partition("://")
    if not separator or scheme != "unix" or not path:
        raise UsageError(f"invalid host {host!r}: expected unix:///path/to/socket")
    return path


def encode_query(query: dict[str, str | list[str]]) -> str:
    """Percent-encode query parameters; a list value repeats the parameter
    (``urllib.parse`` is left out for its import time)."""
    pairs = []
    for name, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append(f"{_quote(name)}={_quote(item)}")
    return "&".join(pairs)


def _quote(text: str) -> str:
    return "".join(
        chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


class _SocketReader:
    """Buffered reads from a socket: up to a delimiter, an exact count, or what is there."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(READ_SIZE)
        self.buffer += data
        return bool(data)

    def read_until(self, delimiter: bytes, limit: int) -> bytes:
        while delimiter not in self.buffer:
            if len(self.buffer) > limit:
                raise ProtocolFailure(
                    f"invalid reply from the daemon: no {delimiter!r} within {limit} bytes"
                )
            if not self._fill():
                raise ProtocolFailure("the daemon closed the connection in the middle of a reply")
        data, self.buffer = self.buffer.split(delimiter, 1)
        return data

    def read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if not self._fill():
                raise ProtocolFailure("the daemon closed the connection in the middle of a reply")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_available(self) -> bytes:
        """Return buffered bytes, or the next bytes from the socket; b"" at its end."""
        if not self.buffer:
            self._fill()
        data, self.buffer = self.buffer, b""
        return data


class Response:
    """A reply whose status line and headers have been read; the body is read on demand."""

    def __init__(self, method: str, reader: _SocketReader) -> None:
        self._reader = reader
        head = reader.read_until(b"\r\n\r\n", MAX_HEAD_BYTES).decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolFailure(f"invalid reply from the daemon: {status_line!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._has_body = method != "HEAD" and self.status not in (204, 304) and self.status >= 200

    @property
    def socket(self) -> socket.socket:
        return self._reader.sock

    def iter_body(self) -> Iterator[bytes]:
        """Yield the body in pieces as they arrive, undoing chunked framing."""
        if not self._has_body:
            return
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            yield from self._iter_chunks()
        elif "content-length" in self.headers:
            yield self._reader.read_exactly(int(self.headers["content-length"]))
        else:
            while data := self._reader.read_available():
                yield data

    def _iter_chunks(self) -> Iterator[bytes]:
        while True:
            size_line = self._reader.read_until(b"\r\n", 1024).split(b";", 1)[0]
            try:
                size = int(size_line.strip(), 16)
            except ValueError:
                raise ProtocolFailure(
                    f"invalid chunk size from the daemon: {size_line!r}"
                ) from None
            if size == 0:
                self._reader.read_until(b"\r\n", MAX_HEAD_BYTES)  # end of the (empty) trailer
                return
            yield self._reader.read_exactly(size)
            self._reader.read_exactly(2)

    def read(self) -> bytes:
        """Read the whole body and close the connection."""
        try:
            return b"".join(self.iter_body())
        finally:
            self.close()

    def json(self) -> object:
        """Read the whole body and decode it as JSON."""
        body = self.read()
        try:
            return json.loads(body)
        except ValueError as error:
            raise ProtocolFailure(
                f"invalid JSON from the daemon: {error}: {body[:200]!r}"
            ) from None

    def iter_json_lines(self) -> Iterator[dict]:
        """Yield the messages of a JSON-lines body (pull progress); StreamError for an error
        message, as dockerd reports a failure after the reply has started."""
        pending = b""
        try:
            for data in self.iter_body():
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _decode_message(line)
            if pending.strip():
                yield _decode_message(pending)
        finally:
            self.close()

    def close(self) -> None:
        self._reader.sock.close()


def _decode_message(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except ValueError as error:
        raise ProtocolFailure(
            f"invalid JSON line from the daemon: {error}: {line[:200]!r}"
        ) from None
    if not isinstance(message, dict):
        raise ProtocolFailure(f"invalid JSON line from the daemon: {line[:200]!r}")
    if message.get("error") or message.get("errorDetail"):
        detail = message.get("errorDetail") or {}
        raise StreamError(message.get("error") or detail.get("message") or "unknown error")
    return message


class Client:
    """A client of one daemon. ``autostart`` is called once when nothing responds on the
    socket, and it may start the daemon. Then the connection is tried again."""

    def __init__(self, host: str, autostart: Callable[[str], object] | None = None) -> None:
        self.host = host
        self.socket_path = socket_path_of(host)
        self._autostart = autostart

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            sock.close()
            if self._autostart is not None:
                autostart, self._autostart = self._autostart, None
                autostart(self.socket_path)
                return self._connect()
            raise DaemonUnreachable(
                f"Cannot connect to the ketch daemon at {self.host}: {error.strerror}. "
                "Is ketchd running?"
            ) from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(
                f"permission denied while trying to connect to the ketch daemon socket at "
                f"{self.host}: run as root or as a member of the socket's group"
            ) from None
        return sock

    def open(
        self,
        method: str,
        path: str,
        query: dict | None = None,
        body: object = None,
        headers: dict[str, str] | None = None,
        data: BinaryIO | None = None,
    ) -> Response:
        """Send a request and read the reply's head; ApiError for an error status.

        ``body`` is sent as JSON; ``data`` is a binary file (a tar archive) streamed as the
        body, with chunked framing when its size is not known in advance.
        """
        target = f"/v{API_VERSION}{path}"
        if query:
            target += "?" + encode_query(query)
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [
            f"{method} {target} HTTP/1.1",
            "Host: ketch",
            f"User-Agent: ketch-cli/{__version__}",
        ]
        all_headers = {"Connection": "close", **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        data_size = _file_size(data) if data is not None else None
        if data is not None:
            all_headers.setdefault("Content-Type", "application/x-tar")
        if data is not None and data_size is None:
            all_headers["Transfer-Encoding"] = "chunked"
        elif body is not None or method in ("POST", "PUT"):
            all_headers["Content-Length"] = str(len(payload) if data_size is None else data_size)
        lines += [f"{name}: {value}" for name, value in all_headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload

        sock = self._connect()
        try:
            sock.sendall(request)
            if data is not None:
                _send_file(sock, data, chunked=data_size is None)
            response = Response(method, _SocketReader(sock))
        except OSError as error:
            sock.close()
            raise DaemonUnreachable(
                f"lost the connection to the ketch daemon at {self.host}: {error}"
            ) from None
        except BaseException:
            sock.close()
            raise
        if response.status >= 400:
            raise _api_error(response)
        return response

    def call(
        self, method: str, path: str, query: dict | None = None, body: object = None
    ) -> object:
        """Send a request and return its decoded JSON body (None for an empty body)."""
        response = self.open(method, path, query, body)
        data = response.read()
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError as error:
            raise ProtocolFailure(
                f"invalid JSON from the daemon: {error}: {data[:200]!r}"
            ) from None

    def hijack(self, path: str, query: dict[str, str], body: object = None) -> Hijacked:
        """POST to ``path`` asking for the raw socket (attach, exec start); return its
        stream."""
        response = self.open(
            "POST", path, query, body, headers={"Connection": "Upgrade", "Upgrade": "tcp"}
        )
        if response.status not in (101, 200):
            response.close()
            raise ProtocolFailure(f"unexpected reply to a hijack request: status {response.status}")
        return Hijacked(response._reader)


def _file_size(data: BinaryIO) -> int | None:
    """Return the bytes left in a regular file, or None for a pipe or terminal."""
    import stat

    try:
        status = os.fstat(data.fileno())
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return status.st_size - data.tell()


def _send_file(sock: socket.socket, data: BinaryIO, chunked: bool) -> None:
    while block := data.read(READ_SIZE):
        sock.sendall(b"%x\r\n%b\r\n" % (len(block), block) if chunked else block)
    if chunked:
        sock.sendall(b"0\r\n\r\n")


def _api_error(response: Response) -> ApiError:
    try:
        body = response.read()
    except (OSError, ProtocolFailure):
        body = b""
    message = body.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
        message = decoded["message"]
    return ApiError(response.status, message or f"status {response.status}")


class Hijacked:
    """The raw socket of an attach after the HTTP reply, read as multiplexed frames."""

    def __init__(self, reader: _SocketReader) -> None:
        self._reader = reader

    def iter_frames(self) -> Iterator[tuple[int, bytes]]:
        """Yield (stream type, payload) for each frame until the daemon closes the socket.

        A frame is an 8-byte header (stream type 0 stdin, 1 stdout, 2 stderr, 3 a daemon
        error, then three zero bytes and a big-endian 32-bit length) and the payload.
        """
        while True:
            if not self._reader.buffer and not self._reader._fill():
                return
            header = self._reader.read_exactly(8)
            length = int.from_bytes(header[4:8], "big")
            yield header[0], self._reader.read_exactly(length)

    @property
    def socket(self) -> socket.socket:
        return self._reader.sock

    def read_raw(self) -> bytes:
        """Return the next bytes of an unframed (TTY) stream; b"" at its end."""
        try:
            return self._reader.read_available()
        except ConnectionResetError:
            return b""

    def close(self) -> None:
        self._reader.sock.close()
