"""A scripted Engine API server on a unix socket, for CLI commands whose routes ketchd
does not serve yet.

Each test registers replies by method and path (``/v1.41`` is stripped), and after the
command reads ``requests`` to check what the CLI sent. A reply is JSON, raw bytes, a
list of JSON lines (a stream), or ``Hijack(frames)``: ``101 UPGRADED`` and then raw
bytes, as attach and exec start reply. Paths may be regular expressions.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    lines: list[dict[str, Any]] | None = None
    raw: bytes | None = None


@dataclass
class Hijack:
    data: bytes


@dataclass
class FakeDocker:
    socket_path: Path
    routes: list[tuple[str, re.Pattern[str], Reply | Hijack]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def reply(self, method: str, path: str, reply: Reply | Hijack) -> None:
        self.routes.insert(0, (method, re.compile(path + "$"), reply))

    def find(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]


def _read_request(stream: Any) -> Request | None:
    line = stream.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := stream.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(stream.readline().split(b";")[0], 16):
            body += stream.read(size)
            stream.readline()
        stream.readline()
    else:
        body = stream.read(int(headers.get("content-length") or 0))
    parts = urlsplit(target)
    path = re.sub(r"^/v1\.\d+", "", unquote(parts.path))
    return Request(method, path, parse_qs(parts.query, keep_blank_values=True), headers, body)


def _send(connection: socket.socket, reply: Reply | Hijack) -> None:
    if isinstance(reply, Hijack):
        head = "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        connection.sendall(head.encode() + reply.data)
        return
    if reply.lines is not None:
        payload = b"".join(json.dumps(line).encode() + b"\n" for line in reply.lines)
        content_type = "application/json"
    elif reply.raw is not None:
        payload, content_type = reply.raw, "application/octet-stream"
    elif reply.body is None:
        payload, content_type = b"", ""
    else:
        payload, content_type = json.dumps(reply.body).encode(), "application/json"
    headers = {"Content-Length": str(len(payload)), "Connection": "close", **reply.headers}
    if content_type:
        headers.setdefault("Content-Type", content_type)
    if reply.status == 204:
        headers.pop("Content-Length")
        payload = b""
    head = f"HTTP/1.1 {reply.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    connection.sendall(head.encode() + b"\r\n" + payload)


def _serve(fake: FakeDocker, listener: socket.socket) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_handle, args=(fake, connection), daemon=True).start()


def _handle(fake: FakeDocker, connection: socket.socket) -> None:
    with connection:
        stream = connection.makefile("rb")
        request = _read_request(stream)
        if request is None:
            return
        fake.requests.append(request)
        for method, pattern, reply in fake.routes:
            if method == request.method and pattern.fullmatch(request.path):
                _send(connection, reply)
                break
        else:
            _send(connection, Reply(404, {"message": f"page not found: {request.path}"}))
        if isinstance(reply, Hijack):
            connection.shutdown(socket.SHUT_WR)


@contextmanager
def serve_fake_docker(socket_path: Path) -> Iterator[FakeDocker]:
    """Serve a FakeDocker on ``socket_path`` until the block ends."""
    fake = FakeDocker(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(16)
    thread = threading.Thread(target=_serve, args=(fake, listener), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)
