"""Request bodies: JSON bodies in memory under a cap, image tarballs spooled to a file."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from ketch.api.connection import (
    MAX_BODY_BYTES,
    SPOOL_CHUNK_BYTES,
    BodySpool,
    BodyTooLarge,
    HttpConnection,
    Request,
)
from ketch.api.server import spools_body

LARGE_SIZE = MAX_BODY_BYTES + 1024 * 1024


def chunked_request(method: str, target: str, size: int) -> bytes:
    """Encode a request whose body is ``size`` bytes sent in 1 MiB chunks, as docker does."""
    head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    block = os.urandom(1024 * 1024)
    parts = [head.encode()]
    remaining = size
    while remaining:
        piece = block[: min(remaining, len(block))]
        parts.append(b"%x\r\n%b\r\n" % (len(piece), piece))
        remaining -= len(piece)
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def read_one_request(data: bytes, spool_dir: Path) -> Request | None:
    """Send ``data`` over a socket pair and read it with an HttpConnection."""

    async def read() -> Request | None:
        server_side, client_side = socket.socketpair()
        sender = threading.Thread(target=_send_and_close, args=(client_side, data))
        sender.start()
        reader, writer = await asyncio.open_connection(sock=server_side)
        http = HttpConnection(reader, writer, spools_body=spools_body, spool_dir=spool_dir)
        try:
            return await http.read_request()
        finally:
            # Closing the server's side unblocks a sender whose body was not read to the end.
            writer.close()
            await writer.wait_closed()
            sender.join(timeout=30)

    return asyncio.run(read())


def _send_and_close(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # The server stops reading a body that is too large.
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/images/load"),
        ("POST", "/v1.45/images/load?quiet=1"),
        ("POST", "/images/create?fromSrc=-&repo=a"),
        ("PUT", "/v1.41/containers/web/archive?path=/tmp"),
    ],
)
def test_spools_body_tarball_routes(method: str, target: str) -> None:
    assert spools_body(method, target)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/containers/create"),
        ("GET", "/images/load"),
        ("POST", "/v1.45/images/busybox/tag"),
        ("GET", "/containers/web/archive?path=/tmp"),
        ("PUT", "/containers/web/archive/extra"),
    ],
)
def test_spools_body_json_routes(method: str, target: str) -> None:
    assert not spools_body(method, target)


def test_load_body_over_cap_is_spooled(tmp_path: Path) -> None:
    request = read_one_request(chunked_request("POST", "/images/load", LARGE_SIZE), tmp_path)
    assert request is not None
    try:
        assert request.body == b""
        assert request.has_body()
        assert len(request.body_stream().read()) == LARGE_SIZE
    finally:
        request.close()


def test_spool_file_is_unlinked(tmp_path: Path) -> None:
    request = read_one_request(chunked_request("POST", "/images/load", 1024), tmp_path)
    assert request is not None
    try:
        assert list(tmp_path.iterdir()) == []
    finally:
        request.close()


def test_spool_closed_with_request(tmp_path: Path) -> None:
    request = read_one_request(chunked_request("POST", "/images/load", 1024), tmp_path)
    assert request is not None
    request.close()
    assert request.body_file is not None
    assert request.body_file.closed


def test_empty_load_body_not_spooled(tmp_path: Path) -> None:
    data = b"POST /images/load HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    request = read_one_request(data, tmp_path)
    assert request is not None
    assert request.body_file is None
    assert not request.has_body()


def test_json_body_over_cap_rejected(tmp_path: Path) -> None:
    data = chunked_request("POST", "/containers/create", LARGE_SIZE)
    with pytest.raises(BodyTooLarge):
        read_one_request(data, tmp_path)


def test_json_body_stays_in_memory(tmp_path: Path) -> None:
    body = b'{"Image": "busybox"}'
    head = f"POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    request = read_one_request(head.encode() + body, tmp_path)
    assert request is not None
    assert request.body_file is None
    assert request.json_body() == {"Image": "busybox"}


class ThreadRecordingFile:
    """A temporary file that records which threads create and write it."""

    def __init__(self, threads: list[int], file: Any) -> None:
        threads.append(threading.get_ident())
        self._file = file
        self._threads = threads

    def write(self, data: bytes) -> int:
        self._threads.append(threading.get_ident())
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def test_spool_written_off_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real_temporary_file = tempfile.TemporaryFile

    def recording_temporary_file(dir: Path | None = None) -> ThreadRecordingFile:
        return ThreadRecordingFile(threads, real_temporary_file(dir=dir))

    monkeypatch.setattr(tempfile, "TemporaryFile", recording_temporary_file)
    data = chunked_request("POST", "/images/load", 3 * SPOOL_CHUNK_BYTES + 5)
    request = read_one_request(data, tmp_path)
    monkeypatch.setattr(tempfile, "TemporaryFile", real_temporary_file)

    assert request is not None
    try:
        assert len(threads) >= 4
        assert threading.get_ident() not in threads
        assert len(request.body_stream().read()) == 3 * SPOOL_CHUNK_BYTES + 5
    finally:
        request.close()


def test_spool_keeps_body_order(tmp_path: Path) -> None:
    body = os.urandom(5 * SPOOL_CHUNK_BYTES + 12345)
    head = f"POST /images/load HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    request = read_one_request(head.encode() + body, tmp_path)
    assert request is not None
    try:
        assert request.body_stream().read() == body
    finally:
        request.close()


def test_spool_closed_after_cancelled_write(tmp_path: Path) -> None:
    async def cancel_during_write() -> None:
        release = threading.Event()
        spool = BodySpool(tmp_path)
        await spool.add(b"start")
        await spool.finish()
        original_write = spool._file.write  # type: ignore[union-attr]

        def slow_write(data: bytes) -> int:
            release.wait(10)
            return original_write(data)

        spool._file.write = slow_write  # type: ignore[method-assign,union-attr]
        adding = asyncio.create_task(spool.add(b"x" * SPOOL_CHUNK_BYTES))
        await asyncio.sleep(0.05)
        adding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await adding

        spool.close()
        assert not spool._file.closed  # type: ignore[union-attr]
        release.set()
        for _ in range(100):
            if spool._file.closed:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        assert spool._file.closed  # type: ignore[union-attr]

    asyncio.run(cancel_during_write())
