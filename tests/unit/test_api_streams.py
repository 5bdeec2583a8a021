"""Streamed replies over a real unix socket: attach (hijack), wait and image pull."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.api import streams
from ketch.api.streams import image_reference
from ketch.errors import NotFound, Unavailable
from support.fake_engine import ServedEngine, serve_fake_engine
from support.raw_http import (
    encode_request,
    open_socket,
    read_head,
    read_reply,
    read_to_end,
    request,
)

UPGRADE = {"Connection": "Upgrade", "Upgrade": "tcp"}


@pytest.fixture
def served() -> Iterator[ServedEngine]:
    directory = Path(tempfile.mkdtemp(prefix="ketch-api-", dir="/tmp"))
    try:
        with serve_fake_engine(directory / "api.sock") as served:
            served.engine.add_image("busybox:latest")
            yield served
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def create(served: ServedEngine, cmd: list[str], auto_remove: bool = False) -> str:
    body = {"Image": "busybox", "Cmd": cmd, "HostConfig": {"AutoRemove": auto_remove}}
    return request(served.socket_path, "POST", "/containers/create", body).json()["Id"]


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while data:
        stream, length = struct.unpack(">BxxxI", data[:8])
        frames.append((stream, data[8 : 8 + length]))
        data = data[8 + length :]
    return frames


def open_attach(served: ServedEngine, container_id: str, headers: dict[str, str]) -> socket.socket:
    sock = open_socket(served.socket_path)
    target = f"/v1.45/containers/{container_id}/attach?stream=1&stdout=1&stderr=1"
    sock.sendall(encode_request("POST", target, headers=headers))
    return sock


def test_attach_upgrade_then_frames(served: ServedEngine) -> None:
    container_id = create(served, ["echo", "hello", ";", "warn", "oops", ";", "exit", "3"])
    with open_attach(served, container_id, UPGRADE) as sock:
        status_line, headers, rest = read_head(sock)
        request(served.socket_path, "POST", f"/containers/{container_id}/start")
        frames = split_frames(read_to_end(sock, rest))
    assert status_line == "HTTP/1.1 101 UPGRADED"
    assert headers["content-type"] == "application/vnd.docker.raw-stream"
    assert headers["connection"] == "Upgrade"
    assert headers["upgrade"] == "tcp"
    assert frames == [(1, b"hello\n"), (2, b"oops\n")]


def test_attach_without_upgrade_is_200(served: ServedEngine) -> None:
    container_id = create(served, ["echo", "plain"])
    with open_attach(served, container_id, {}) as sock:
        status_line, headers, rest = read_head(sock)
        request(served.socket_path, "POST", f"/containers/{container_id}/start")
        frames = split_frames(read_to_end(sock, rest))
    assert status_line == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "application/vnd.docker.raw-stream"
    assert "transfer-encoding" not in headers
    assert frames == [(1, b"plain\n")]


def test_attach_unknown_container_is_404(served: ServedEngine) -> None:
    with open_attach(served, "missing", UPGRADE) as sock:
        reply = read_reply(sock, "POST")
    assert reply.status == 404
    assert reply.json() == {"message": "No such container: missing"}


def test_wait_headers_before_body(served: ServedEngine) -> None:
    container_id = create(served, ["exit", "7"])
    with open_socket(served.socket_path) as sock:
        sock.sendall(encode_request("POST", f"/containers/{container_id}/wait?condition=next-exit"))
        status_line, headers, rest = read_head(sock)
        # The container has not started, so the headers arrived before any result existed.
        assert status_line == "HTTP/1.1 200 OK"
        assert headers["content-type"] == "application/json"
        assert headers["transfer-encoding"] == "chunked"
        assert rest == b""
        request(served.socket_path, "POST", f"/containers/{container_id}/start")
        body = read_reply_body_chunked(sock)
    assert json.loads(body) == {"StatusCode": 7, "Error": None}


def test_wait_then_next_request_on_same_connection(served: ServedEngine) -> None:
    container_id = create(served, ["exit", "0"])
    request(served.socket_path, "POST", f"/containers/{container_id}/start")
    with open_socket(served.socket_path) as sock:
        sock.sendall(encode_request("POST", f"/containers/{container_id}/wait"))
        waited = read_reply(sock, "POST")
        assert waited.json() == {"StatusCode": 0, "Error": None}
        # The wait watched the socket for the client leaving; the next request on the
        # same connection must still be read and answered.
        sock.sendall(encode_request("GET", "/_ping"))
        reply = read_reply(sock)
    assert reply.status == 200
    assert reply.body == b"OK"


def read_reply_body_chunked(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed inside a chunked body: {data!r}"
        data += chunk
    body = b""
    while True:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


def test_wait_removed_with_auto_remove(served: ServedEngine) -> None:
    container_id = create(served, ["exit", "2"], auto_remove=True)
    with open_socket(served.socket_path) as sock:
        sock.sendall(encode_request("POST", f"/containers/{container_id}/wait?condition=removed"))
        read_head(sock)
        request(served.socket_path, "POST", f"/containers/{container_id}/start")
        body = read_reply_body_chunked(sock)
    assert json.loads(body)["StatusCode"] == 2
    assert container_id not in served.engine.containers


def test_wait_cancelled_when_client_leaves(served: ServedEngine) -> None:
    container_id = create(served, ["sleep"])
    with open_socket(served.socket_path) as sock:
        sock.sendall(encode_request("POST", f"/containers/{container_id}/wait"))
        read_head(sock)
    container = served.engine.containers[container_id]
    deadline = time.monotonic() + 5
    while not container.exit_waiters[0].cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert container.exit_waiters[0].cancelled()


PROGRESS = [
    {"status": "Pulling from library/busybox", "id": "latest"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Downloading", "progressDetail": {"current": 10, "total": 20}, "id": "a1b2c3d4e5f6"},
]


def pull_lines(served: ServedEngine, target: str) -> tuple[int, list[dict]]:
    reply = request(served.socket_path, "POST", target)
    lines = [json.loads(line) for line in reply.body.splitlines() if line.strip()]
    return reply.status, lines


def test_pull_streams_progress_lines(served: ServedEngine) -> None:
    served.engine.pull_results["alpine:3.19"] = (PROGRESS, None)
    served.engine.pull_delay = 0.01
    status, lines = pull_lines(served, "/images/create?fromImage=alpine&tag=3.19")
    assert status == 200
    assert lines == PROGRESS
    assert "alpine:3.19" in served.engine.images


def test_pull_error_mid_stream(served: ServedEngine) -> None:
    error = Unavailable("registry 127.0.0.1:1 is unreachable: connection refused")
    served.engine.pull_results["127.0.0.1:1/app"] = (PROGRESS[:1], error)
    status, lines = pull_lines(served, "/images/create?fromImage=127.0.0.1:1/app")
    assert status == 200
    assert lines[0] == PROGRESS[0]
    message = "registry 127.0.0.1:1 is unreachable: connection refused"
    assert lines[-1] == {"errorDetail": {"message": message}, "error": message}


def test_pull_error_before_progress_is_http_error(served: ServedEngine) -> None:
    error = NotFound("manifest for nothing:latest not found: manifest unknown")
    served.engine.pull_results["nothing:latest"] = ([], error)
    reply = request(served.socket_path, "POST", "/images/create?fromImage=nothing&tag=latest")
    assert reply.status == 404
    assert reply.json() == {"message": "manifest for nothing:latest not found: manifest unknown"}


def test_pull_unreachable_registry_is_500(served: ServedEngine) -> None:
    served.engine.pull_results["127.0.0.1:1/app:latest"] = ([], Unavailable("no route"))
    reply = request(
        served.socket_path, "POST", "/images/create?fromImage=127.0.0.1:1/app&tag=latest"
    )
    assert reply.status == 500
    assert reply.json() == {"message": "no route"}


def test_pull_without_from_image_is_400(served: ServedEngine) -> None:
    reply = request(served.socket_path, "POST", "/images/create?tag=latest")
    assert reply.status == 400
    assert "fromImage" in reply.json()["message"]


def test_image_reference_from_query() -> None:
    cases = [
        ({"fromImage": "busybox"}, "busybox"),
        ({"fromImage": "busybox", "tag": "1.36"}, "busybox:1.36"),
        ({"fromImage": "busybox:old", "tag": "1.36"}, "busybox:1.36"),
        ({"fromImage": "127.0.0.1:5000/app", "tag": "v2"}, "127.0.0.1:5000/app:v2"),
        ({"fromImage": "busybox", "tag": "sha256:" + "a" * 64}, "busybox@sha256:" + "a" * 64),
    ]
    for query, expected in cases:
        assert image_reference(query) == expected, query


def test_attach_ends_when_client_hangs_up(
    served: ServedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "HANGUP_POLL_SECONDS", 0.01)
    container_id = create(served, ["sleep"])
    request(served.socket_path, "POST", f"/containers/{container_id}/start")
    with open_attach(served, container_id, UPGRADE) as sock:
        read_head(sock)
    deadline = time.monotonic() + 5
    while served.call(served_task_count) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.call(served_task_count) == 1


def test_attach_survives_client_half_close(served: ServedEngine) -> None:
    container_id = create(served, ["echo", "after", "half", "close"])
    with open_attach(served, container_id, UPGRADE) as sock:
        _, _, rest = read_head(sock)
        sock.shutdown(socket.SHUT_WR)
        time.sleep(0.05)
        request(served.socket_path, "POST", f"/containers/{container_id}/start")
        frames = split_frames(read_to_end(sock, rest))
    assert frames == [(1, b"after half close\n")]


def served_task_count() -> int:
    """Count the tasks on the server's loop: the server itself plus one per connection."""
    return len(asyncio.all_tasks())


def test_detach_keys_default() -> None:
    from ketch.api.streams import parse_detach_keys

    assert parse_detach_keys("") == b"\x10\x11"


def test_detach_keys_rejects_word() -> None:
    from ketch.api.streams import parse_detach_keys
    from ketch.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="detach keys"):
        parse_detach_keys("ctrl-p,escape")


def test_detach_scanner_across_reads() -> None:
    from ketch.api.streams import DetachScanner

    scanner = DetachScanner(b"\x10\x11")
    assert scanner.feed(b"ab\x10") == (b"ab", False)
    assert scanner.feed(b"\x11rest") == (b"", True)


def test_detach_scanner_passes_broken_prefix() -> None:
    from ketch.api.streams import DetachScanner

    scanner = DetachScanner(b"\x10\x11")
    assert scanner.feed(b"\x10x") == (b"\x10x", False)
