"""ketch.api.tls: the API server's TLS connections, against a client on memory BIOs.

The client drives TLS by hand, as Go's crypto/tls does for the docker CLI, so a test can
send a close_notify and go on reading, or send a FIN without one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ketch.api import tls
from ketch.api.server import serve_tcp, tls_context
from support.fake_engine import FakeEngine
from support.tls import make_loopback_certificate

READ_SIZE = 65536
TIMEOUT_SECONDS = 10.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, which is its own CA, and its key."""
    return make_loopback_certificate(tmp_path_factory.mktemp("tls"))


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    cert, key = certificate
    return tls_context(str(cert), str(cert), str(key))


def client_context(certificate: tuple[Path, Path], *, with_certificate: bool) -> ssl.SSLContext:
    cert, key = certificate
    context = ssl.create_default_context(cafile=str(cert))
    if with_certificate:
        context.load_cert_chain(cert, key)
    return context


class MemoryTLSClient:
    """A TLS client over a plain asyncio connection, with the TLS steps under test control."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                await self.receive()
        await self.flush()

    async def send(self, data: bytes) -> None:
        self.tls.write(data)
        await self.flush()

    async def send_close_notify(self) -> None:
        """End the client's writing at the TLS layer only, as Go's CloseWrite does."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        await self.flush()

    async def read_until_close_notify(self) -> bytes:
        """Return all the plaintext the server sends before its close_notify."""
        data = bytearray()
        while True:
            try:
                chunk = self.tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                await self.receive()
                continue
            except ssl.SSLZeroReturnError:
                return bytes(data)
            if not chunk:
                # CPython returns an empty read for a close_notify sent before the client's own.
                return bytes(data)
            data += chunk

    async def receive(self) -> None:
        data = await self.reader.read(READ_SIZE)
        if not data:
            raise ConnectionError("the server closed the TCP connection")
        self.incoming.write(data)

    async def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.writer.write(data)
            await self.writer.drain()


async def connect(port: int, context: ssl.SSLContext) -> MemoryTLSClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return MemoryTLSClient(reader, writer, context)


async def with_server(
    certificate: tuple[Path, Path],
    handler: Handler,
    client: Callable[[int], Awaitable[bytes]],
) -> bytes:
    """Serve ``handler`` over TLS on a free loopback port and run ``client`` against it."""
    server = await tls.start_server(handler, server_context(certificate), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await asyncio.wait_for(client(port), TIMEOUT_SECONDS)
    finally:
        server.close()
        await server.wait_closed()


async def reply_after_end_of_input(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    received = await reader.read()
    writer.write(b"received " + received)
    await writer.drain()
    writer.write(b", and still writing")
    writer.close()
    await writer.wait_closed()


def test_close_notify_leaves_server_writing(certificate: tuple[Path, Path]) -> None:
    async def client(port: int) -> bytes:
        connection = await connect(port, client_context(certificate, with_certificate=True))
        await connection.handshake()
        await connection.send(b"ping")
        await connection.send_close_notify()
        return await connection.read_until_close_notify()

    output = asyncio.run(with_server(certificate, reply_after_end_of_input, client))

    assert output == b"received ping, and still writing"


def test_fin_without_close_notify_ends_input(certificate: tuple[Path, Path]) -> None:
    async def client(port: int) -> bytes:
        connection = await connect(port, client_context(certificate, with_certificate=True))
        await connection.handshake()
        await connection.send(b"ping")
        connection.writer.write_eof()
        return await connection.read_until_close_notify()

    output = asyncio.run(with_server(certificate, reply_after_end_of_input, client))

    assert output == b"received ping, and still writing"


def test_large_reply_passes_flow_control(certificate: tuple[Path, Path]) -> None:
    chunk = bytes(range(256)) * 256
    chunk_count = 64

    async def send_chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        for _ in range(chunk_count):
            writer.write(chunk)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def client(port: int) -> bytes:
        connection = await connect(port, client_context(certificate, with_certificate=True))
        await connection.handshake()
        await connection.send_close_notify()
        # Give the server time to fill the socket's buffer and pause before any reading.
        await asyncio.sleep(0.2)
        return await connection.read_until_close_notify()

    output = asyncio.run(with_server(certificate, send_chunks, client))

    assert len(output) == len(chunk) * chunk_count
    assert output == chunk * chunk_count


def test_client_without_certificate_rejected(
    certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[bool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handled.append(True)
        writer.close()

    async def client(port: int) -> bytes:
        connection = await connect(port, client_context(certificate, with_certificate=False))
        # With TLS 1.3 the client's side of the handshake completes before the server has
        # checked the client, so the rejection arrives at the first read.
        await connection.handshake()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await connection.read_until_close_notify()
        return b""

    with caplog.at_level(logging.INFO, logger="ketch.api.tls"):
        asyncio.run(with_server(certificate, handler, client))

    assert handled == []
    assert "TLS handshake with 127.0.0.1:" in caplog.text


def test_plain_http_gets_http_error(certificate: tuple[Path, Path]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def client(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /_ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = await reader.read()
        writer.close()
        return reply

    reply = asyncio.run(with_server(certificate, handler, client))

    assert reply.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert b"Client sent an HTTP request to an HTTPS server." in reply


def test_serve_tcp_serves_http_over_tls(certificate: tuple[Path, Path]) -> None:
    request = b"GET /_ping HTTP/1.1\r\nHost: ketch\r\n\r\n"

    async def client(port: int) -> bytes:
        connection = await connect(port, client_context(certificate, with_certificate=True))
        await connection.handshake()
        await connection.send(request)
        await connection.send_close_notify()
        return await connection.read_until_close_notify()

    async def run() -> bytes:
        server = await serve_tcp(FakeEngine(), "127.0.0.1", 0, server_context(certificate))
        port = server.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(client(port), TIMEOUT_SECONDS)
        finally:
            server.close()
            await server.wait_closed()

    reply = asyncio.run(run())

    assert reply.startswith(b"HTTP/1.1 200 ")
    assert reply.endswith(b"\r\n\r\nOK")


def test_slow_handshake_disconnected(
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(tls, "HANDSHAKE_TIMEOUT_SECONDS", 0.2)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def client(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await reader.read(READ_SIZE)
        finally:
            writer.close()

    with caplog.at_level(logging.INFO, logger="ketch.api.tls"):
        received = asyncio.run(with_server(certificate, handler, client))

    assert received == b""
    assert "did not finish its handshake within 0.2 s" in caplog.text


def test_import_leaves_ssl_out() -> None:
    # ketchd starts without ssl, so the module must get it from deferred_ssl.load only.
    code = (
        "from ketch import deferred_ssl\n"
        "deferred_ssl.leave_out()\n"
        "import ketch.api.tls\n"
        "import sys\n"
        "print('ssl entry:', sys.modules['ssl'])\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert "ssl entry: None" in completed.stdout


def test_context_rejects_renegotiation(certificate: tuple[Path, Path]) -> None:
    context = server_context(certificate)

    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.verify_mode == ssl.CERT_REQUIRED
