"""A blocking HTTP/1.1 client over a unix socket for tests that check the server's bytes.

``request`` sends one request and returns the whole reply, decoded with h11 so that
chunked framing is checked too. ``open_socket`` and ``read_head`` let a test read a reply
step by step: the status line and headers first, the body later.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def open_socket(socket_path: Path, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(socket_path))
    return sock


def encode_request(
    method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_head(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """Read up to the end of the headers; return the status line, headers and the bytes
    read past them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed inside the reply head: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return status_line, headers, rest


def read_to_end(sock: socket.socket, already: bytes = b"") -> bytes:
    data = already
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_reply(sock: socket.socket, method: str = "GET") -> Reply:
    """Read one reply with h11 (checking its framing) from a socket."""
    connection = h11.Connection(h11.CLIENT)
    # h11 needs to have seen the request to frame the reply (a HEAD reply has no body).
    connection.send(h11.Request(method=method, target="/", headers=[("Host", "localhost")]))
    connection.send(h11.EndOfMessage())
    status, reason, headers, body = 0, "", {}, b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            status, reason = event.status_code, event.reason.decode()
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return Reply(status, reason, headers, body)


def request(
    socket_path: Path,
    method: str,
    target: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """Send one request on a new connection and return the reply."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    with open_socket(socket_path) as sock:
        sock.sendall(encode_request(method, target, body or b"", headers))
        return read_reply(sock, method)
