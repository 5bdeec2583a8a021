"""The registry's HTTP client against a loopback server that sends hand-written responses.

The server parses each request with h11 and sends whatever bytes the test's handler
returns, so that framing, keep-alive and early closes can be staged exactly.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

from ketch.images.http_client import HTTPClientError, Session
from support.tls import make_loopback_certificate


@dataclass
class ReceivedRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # number of the connection that carried the request, from 1


# Test-supplied function that returns the raw response bytes for a request, or None to
# close the connection without a response.
Handler = Callable[[ReceivedRequest], bytes | None]


@dataclass
class LoopbackServer:
    handler: Handler
    close_after_response: bool = False
    requests: list[ReceivedRequest] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        pending = b""
        try:
            while True:
                parser = h11.Connection(h11.SERVER)
                if pending:  # receive_data(b"") would mean end of stream
                    parser.receive_data(pending)
                request = await _read_request(parser, reader, number)
                if request is None:
                    return
                pending = parser.trailing_data[0]
                self.requests.append(request)
                response = self.handler(request)
                if response is None:
                    return
                writer.write(response)
                await writer.drain()
                if self.close_after_response:
                    return
        finally:
            writer.close()


async def _read_request(
    parser: h11.Connection, reader: asyncio.StreamReader, number: int
) -> ReceivedRequest | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            parser.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            headers = {name.decode(): value.decode() for name, value in head.headers}
            return ReceivedRequest(
                head.method.decode(), head.target.decode(), headers, bytes(body), number
            )
        else:
            return None  # the client closed the connection


async def with_server(
    handler: Handler,
    body: Callable[[LoopbackServer], Awaitable[Any]],
    *,
    close_after_response: bool = False,
) -> Any:
    server = LoopbackServer(handler, close_after_response)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        return await body(server)
    finally:
        listener.close()
        await listener.wait_closed()


def response_bytes(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status} Status"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def with_length(body: bytes, status: int = 200, **headers: str) -> bytes:
    items = [(name.replace("_", "-"), value) for name, value in headers.items()]
    return response_bytes(status, [("Content-Length", str(len(body))), *items], body)


def chunked(pieces: list[bytes]) -> bytes:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return response_bytes(200, [("Transfer-Encoding", "chunked")], framed + b"0\r\n\r\n")


def test_status_headers_and_length_body() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        return response_bytes(
            404,
            [("Content-Length", "5"), ("X-Thing", "one"), ("x-thing", "two")],
            b"hello",
        )

    async def body(server: LoopbackServer) -> None:
        async with Session() as session:
            async with await session.request("GET", f"{server.url}/a") as response:
                assert response.status == 404
                assert response.headers["X-THING"] == "one"
                assert response.headers.get_all("x-thing") == ["one", "two"]
                assert "content-length" in response.headers
                assert response.content_length == 5
                assert response.url == f"{server.url}/a"
                assert await response.read() == b"hello"

    asyncio.run(with_server(handler, body))


def test_request_line_and_headers() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        return with_length(b"")

    async def body(server: LoopbackServer) -> tuple[list[ReceivedRequest], int]:
        async with Session(headers={"User-Agent": "ketch/test"}) as session:
            url = f"{server.url}/v2/token?x=1"
            params = [("scope", "repository:a/b:pull"), ("scope", "other")]
            response = await session.request("GET", url, params=params)
            response.release()
            response = await session.request("POST", server.url, headers={"user-agent": "mine"})
            response.release()
        return server.requests, server.port

    (first, second), port = asyncio.run(with_server(handler, body))
    assert first.target == "/v2/token?x=1&scope=repository%3Aa%2Fb%3Apull&scope=other"
    assert first.headers["host"] == f"127.0.0.1:{port}"
    assert first.headers["user-agent"] == "ketch/test"
    assert "accept-encoding" not in first.headers
    assert second.target == "/"
    assert second.headers["user-agent"] == "mine"
    assert second.headers["content-length"] == "0"


def test_chunked_body_in_pieces() -> None:
    pieces = [b"a" * 10, b"b" * 70_000, b"c"]

    def handler(request: ReceivedRequest) -> bytes:
        return chunked(pieces)

    async def body(server: LoopbackServer) -> list[bytes]:
        async with Session() as session:
            async with await session.request("GET", server.url) as response:
                assert response.content_length is None
                return [chunk async for chunk in response.iter_chunks()]

    received = asyncio.run(with_server(handler, body))
    assert b"".join(received) == b"".join(pieces)
    assert all(received)


def test_keep_alive_reuses_connection() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        if request.target == "/chunked":
            return chunked([b"xyz"])
        return with_length(b"body")

    async def body(server: LoopbackServer) -> None:
        async with Session() as session:
            for target in ("/length", "/chunked", "/length"):
                async with await session.request("GET", server.url + target) as response:
                    await response.read()
            response = await session.request("HEAD", server.url)
            response.release()

    server_requests = asyncio.run(with_server(handler, body_and_requests(body)))
    assert [request.connection for request in server_requests] == [1, 1, 1, 1]


def body_and_requests(
    body: Callable[[LoopbackServer], Awaitable[None]],
) -> Callable[[LoopbackServer], Awaitable[list[ReceivedRequest]]]:
    async def run(server: LoopbackServer) -> list[ReceivedRequest]:
        await body(server)
        return server.requests

    return run


def test_unread_body_closes_connection() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        return with_length(b"0123456789")

    async def body(server: LoopbackServer) -> None:
        async with Session() as session:
            async with await session.request("GET", server.url) as response:
                assert await response.read(4) == b"0123"
                assert await response.read(3) == b"456"
            async with await session.request("GET", server.url) as response:
                assert await response.read() == b"0123456789"

    server_requests = asyncio.run(with_server(handler, body_and_requests(body)))
    assert [request.connection for request in server_requests] == [1, 2]


def test_connection_closed_early() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        return response_bytes(200, [("Content-Length", "1000")], b"x" * 10)

    async def body(server: LoopbackServer) -> None:
        async with Session() as session:
            async with await session.request("GET", server.url) as response:
                await response.read()

    with pytest.raises(HTTPClientError, match="connection closed after 10 of 1000 body bytes"):
        asyncio.run(with_server(handler, body, close_after_response=True))


def test_body_until_close() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        return response_bytes(200, [], b"until the end")

    async def body(server: LoopbackServer) -> bytes:
        async with Session() as session:
            async with await session.request("GET", server.url) as response:
                return await response.read()

    assert asyncio.run(with_server(handler, body, close_after_response=True)) == b"until the end"


def test_closed_before_response() -> None:
    def handler(request: ReceivedRequest) -> None:
        return None

    async def body(server: LoopbackServer) -> None:
        async with Session() as session:
            await session.request("GET", server.url)

    with pytest.raises(HTTPClientError, match="connection closed before the response"):
        asyncio.run(with_server(handler, body))


def test_idle_connection_closed_by_server() -> None:
    """A request on a pooled connection that the server closed goes out on a new one."""
    served: list[int] = []

    def handler(request: ReceivedRequest) -> bytes | None:
        served.append(request.connection)
        if request.connection == 1 and len(served) > 1:
            return None  # the second request on the first connection
        return with_length(b"ok")

    async def body(server: LoopbackServer) -> list[bytes]:
        async with Session() as session:
            results = []
            for _ in range(2):
                async with await session.request("GET", server.url) as response:
                    results.append(await response.read())
            return results

    assert asyncio.run(with_server(handler, body)) == [b"ok", b"ok"]
    assert served == [1, 1, 2]


def test_redirect_keeps_authorization_on_same_host() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        if request.target == "/start":
            return with_length(b"moved", status=307, Location="/final")
        return with_length(b"final")

    async def body(server: LoopbackServer) -> list[ReceivedRequest]:
        async with Session() as session:
            headers = {"Authorization": "Bearer secret"}
            async with await session.request(
                "GET", f"{server.url}/start", headers=headers
            ) as response:
                assert response.status == 200
                assert response.url == f"{server.url}/final"
                assert await response.read() == b"final"
        return server.requests

    first, second = asyncio.run(with_server(handler, body))
    assert second.target == "/final"
    assert second.headers["authorization"] == "Bearer secret"
    assert second.connection == first.connection


def test_redirect_to_other_host_drops_authorization() -> None:
    def storage_handler(request: ReceivedRequest) -> bytes:
        return with_length(b"blob")

    async def body(storage: LoopbackServer) -> None:
        def registry_handler(request: ReceivedRequest) -> bytes:
            return with_length(b"", status=302, Location=f"{storage.url}/blob")

        async def fetch(registry: LoopbackServer) -> bytes:
            async with Session() as session:
                headers = {"Authorization": "Bearer secret"}
                response = await session.request("GET", registry.url, headers=headers)
                async with response:
                    return await response.read()

        assert await with_server(registry_handler, fetch) == b"blob"
        assert "authorization" not in storage.requests[0].headers

    asyncio.run(with_server(storage_handler, body))


def test_redirect_loop_stops() -> None:
    servers: list[LoopbackServer] = []

    def handler(request: ReceivedRequest) -> bytes:
        return with_length(b"", status=302, Location="/again")

    async def body(server: LoopbackServer) -> None:
        servers.append(server)
        async with Session() as session:
            await session.request("GET", f"{server.url}/start")

    with pytest.raises(HTTPClientError, match=r"more than 10 redirects for GET http://.*/again"):
        asyncio.run(with_server(handler, body))
    requests = servers[0].requests
    assert len(requests) == 11
    # Each redirect's empty body was read, so one connection carried them all.
    assert {request.connection for request in requests} == {1}


@pytest.mark.parametrize(("location", "expected"), [("/a b", "/a b"), ("/caf\u00e9", "/caf")])
def test_redirect_to_invalid_target(location: str, expected: str) -> None:
    def handler(request: ReceivedRequest) -> bytes:
        return response_bytes(302, [("Location", location), ("Content-Length", "0")])

    async def body(server: LoopbackServer) -> None:
        async with Session() as session:
            await session.request("GET", f"{server.url}/start")

    with pytest.raises(HTTPClientError, match=f"invalid request to http://.*{expected}"):
        asyncio.run(with_server(handler, body))


def test_redirect_not_followed_for_put() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        return with_length(b"", status=307, Location="/elsewhere")

    async def body(server: LoopbackServer) -> int:
        async with Session() as session:
            async with await session.request("PUT", server.url, data=b"x") as response:
                return response.status

    assert asyncio.run(with_server(handler, body)) == 307


def test_streamed_upload_is_chunked() -> None:
    pieces = [b"first ", b"second " * 50_000, b"third"]

    def handler(request: ReceivedRequest) -> bytes:
        return with_length(b"", status=201)

    async def stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def body(server: LoopbackServer) -> list[ReceivedRequest]:
        async with Session() as session:
            async with await session.request("PUT", server.url, data=stream()) as response:
                assert response.status == 201
            headers = {"Content-Length": str(len(b"".join(pieces)))}
            async with await session.request(
                "PUT", server.url, headers=headers, data=stream()
            ) as response:
                assert response.status == 201
            async with await session.request("PATCH", server.url, data=b"bytes") as response:
                assert response.status == 201
        return server.requests

    chunked_put, length_put, patch = asyncio.run(with_server(handler, body))
    assert chunked_put.headers["transfer-encoding"] == "chunked"
    assert chunked_put.body == b"".join(pieces)
    assert length_put.headers["content-length"] == str(len(b"".join(pieces)))
    assert length_put.body == b"".join(pieces)
    assert patch.headers["content-length"] == "5"
    assert patch.body == b"bytes"


def test_failing_upload_source_raises_its_error() -> None:
    def handler(request: ReceivedRequest) -> bytes:
        return with_length(b"", status=201)

    async def stream() -> AsyncIterator[bytes]:
        yield b"part"
        raise ValueError("the source ended early")

    async def body(server: LoopbackServer) -> None:
        async with Session() as session:
            await session.request("PUT", server.url, data=stream())

    with pytest.raises(ValueError, match="the source ended early"):
        asyncio.run(with_server(handler, body))


# The same timeout applies once a request body is sent.
@pytest.mark.parametrize(("method", "data"), [("GET", None), ("PUT", b"body")])
def test_read_timeout(method: str, data: bytes | None) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    async def body() -> None:
        listener = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            async with Session(read_timeout=0.2) as session:
                await session.request(method, f"http://127.0.0.1:{port}/", data=data)
        finally:
            listener.close()

    with pytest.raises(HTTPClientError, match="no data from 127.0.0.1:.* for 0.2 seconds"):
        asyncio.run(body())


def test_read_timeout_starts_after_upload() -> None:
    """A server that responds only to the whole body sends nothing while a slow upload runs,
    which does not count against the read timeout."""
    pieces = [b"first", b"second", b"third", b"fourth"]

    def handler(request: ReceivedRequest) -> bytes:
        return with_length(b"", status=201)

    async def slow_stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(0.15)

    async def body(server: LoopbackServer) -> int:
        async with Session(read_timeout=0.2) as session:
            async with await session.request("PUT", server.url, data=slow_stream()) as response:
                return response.status

    assert asyncio.run(with_server(handler, body)) == 201


def test_refused_connection() -> None:
    async def body() -> None:
        async with Session() as session:
            await session.request("GET", "http://127.0.0.1:1/")

    with pytest.raises(HTTPClientError, match="cannot connect to 127.0.0.1:1"):
        asyncio.run(body())


def test_invalid_url() -> None:
    async def body() -> None:
        async with Session() as session:
            await session.request("GET", "ftp://127.0.0.1/file")

    with pytest.raises(HTTPClientError, match="invalid URL 'ftp://127.0.0.1/file'"):
        asyncio.run(body())


def test_registry_import_leaves_out_aiohttp() -> None:
    code = "import sys, ketch.images.registry, ketch.images.pull, ketch.images.push; " + (
        "print(*sorted({'aiohttp', 'yarl', 'multidict'} & set(sys.modules)))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == ""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return make_loopback_certificate(tmp_path_factory.mktemp("tls"))


async def fetch_over_tls(cert: Path, key: Path, body: bytes) -> bytes:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = LoopbackServer(lambda request: with_length(body))
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with Session() as session:
            async with await session.request("GET", f"https://127.0.0.1:{port}/") as response:
                return await response.read()
    finally:
        listener.close()


def test_tls_with_trusted_certificate(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL's default verify paths, which the client's default context loads, honour it.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    body = bytes(range(256)) * 12_000
    assert asyncio.run(fetch_over_tls(*certificate, body)) == body


def test_tls_rejects_unknown_certificate(certificate: tuple[Path, Path]) -> None:
    with pytest.raises(HTTPClientError, match="certificate verify failed"):
        asyncio.run(fetch_over_tls(*certificate, b"never read"))
