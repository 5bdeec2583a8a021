"""The CLI's HTTP client against canned replies on a unix socket, and ketchd's autostart."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.cli.autostart import start_daemon
from ketch.cli.client import Client, encode_query
from ketch.cli.errors import ApiError, DaemonUnreachable, ProtocolFailure, StreamError


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="ketch-client-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class CannedServer:
    """Accept one connection, record the request head, send ``reply`` and close."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.path = path
        self.reply = reply
        self.request = b""
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            while b"\r\n\r\n" not in self.request:
                data = connection.recv(65536)
                if not data:
                    break
                self.request += data
            connection.sendall(self.reply)

    def close(self) -> None:
        self.thread.join(5)
        self.listener.close()


def reply_to(socket_dir: Path, reply: bytes) -> tuple[Client, CannedServer]:
    server = CannedServer(socket_dir / "canned.sock", reply)
    return Client(f"unix://{server.path}"), server


def test_client_reads_content_length_body(socket_dir: Path) -> None:
    client, server = reply_to(
        socket_dir, b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"a": true}'
    )
    assert client.call("GET", "/info", {"all": "1"}) == {"a": True}
    server.close()
    assert server.request.startswith(b"GET /v1.41/info?all=1 HTTP/1.1\r\n")
    assert b"\r\nConnection: close\r\n" in server.request


def test_client_reads_chunked_body(socket_dir: Path) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n[1, 2\r\n4;ext=1\r\n, 3]\r\n0\r\n\r\n"
    )
    client, server = reply_to(socket_dir, reply)
    assert client.call("GET", "/containers/json") == [1, 2, 3]
    server.close()


def test_client_reads_body_until_close(socket_dir: Path) -> None:
    client, server = reply_to(socket_dir, b"HTTP/1.1 200 OK\r\n\r\n[]")
    assert client.call("GET", "/images/json") == []
    server.close()


def test_client_no_content_reply(socket_dir: Path) -> None:
    client, server = reply_to(socket_dir, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert client.call("POST", "/containers/x/start") is None
    server.close()
    assert b"\r\nContent-Length: 0\r\n" in server.request


def test_client_error_reply_raises_api_error(socket_dir: Path) -> None:
    body = b'{"message": "No such container: x"}'
    reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    client, server = reply_to(socket_dir, reply)
    with pytest.raises(ApiError) as raised:
        client.call("GET", "/containers/x/json")
    server.close()
    assert raised.value.status == 404
    assert str(raised.value) == "Error response from daemon: No such container: x"


def test_client_error_reply_with_plain_text(socket_dir: Path) -> None:
    client, server = reply_to(socket_dir, b"HTTP/1.1 502 Bad Gateway\r\n\r\nupstream down\n")
    with pytest.raises(ApiError, match="Error response from daemon: upstream down$"):
        client.call("GET", "/info")
    server.close()


def test_client_rejects_invalid_status_line(socket_dir: Path) -> None:
    client, server = reply_to(socket_dir, b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ProtocolFailure, match="invalid reply from the daemon: 'SSH-2.0-OpenSSH'"):
        client.call("GET", "/info")
    server.close()


def test_client_json_lines_with_error(socket_dir: Path) -> None:
    body = (
        b'{"status": "a"}\r\n{"status": "b"}\r\n'
        b'{"errorDetail": {"message": "boom"}, "error": "boom"}\r\n'
    )
    client, server = reply_to(socket_dir, b"HTTP/1.1 200 OK\r\n\r\n" + body)
    seen = []
    with pytest.raises(StreamError, match="^boom$"):
        for message in client.open("POST", "/images/create").iter_json_lines():
            seen.append(message["status"])
    server.close()
    assert seen == ["a", "b"]


def test_client_hijack_frames(socket_dir: Path) -> None:
    frames = b"\x01\x00\x00\x00\x00\x00\x00\x03out\x02\x00\x00\x00\x00\x00\x00\x04err\n"
    reply = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + frames
    client, server = reply_to(socket_dir, reply)
    hijacked = client.hijack("/containers/x/attach", {"stream": "1"})
    assert list(hijacked.iter_frames()) == [(1, b"out"), (2, b"err\n")]
    hijacked.close()
    server.close()
    assert b"\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n" in server.request


def test_client_cut_frame_is_protocol_failure(socket_dir: Path) -> None:
    reply = b"HTTP/1.1 101 UPGRADED\r\n\r\n\x01\x00\x00\x00\x00\x00\x00\x09short"
    client, server = reply_to(socket_dir, reply)
    hijacked = client.hijack("/containers/x/attach", {})
    with pytest.raises(ProtocolFailure, match="closed the connection in the middle of a reply"):
        list(hijacked.iter_frames())
    hijacked.close()
    server.close()


def test_encode_query_escapes() -> None:
    query = {"filters": '{"reference": ["a b"]}', "name": "x&y"}
    assert encode_query(query) == (
        "filters=%7B%22reference%22%3A%20%5B%22a%20b%22%5D%7D&name=x%26y"
    )


def test_client_unreachable_socket(socket_dir: Path) -> None:
    client = Client(f"unix://{socket_dir}/missing.sock")
    with pytest.raises(DaemonUnreachable, match="Is ketchd running"):
        client.call("GET", "/_ping")


FAKE_DAEMON = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from support.fake_engine import serve_fake_engine

    with serve_fake_engine(Path(sys.argv[1])):
        print("fake ketchd serving", flush=True)
        time.sleep(60)
    """
)


def test_autostart_starts_daemon_and_waits(
    socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_path = str(socket_dir / "ketch.sock")
    log_path = socket_dir / "ketchd.log"
    command = [sys.executable, "-c", FAKE_DAEMON, socket_path]
    tests_dir = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", tests_dir)
    pid = None
    try:
        calls = []

        def autostart(path: str) -> None:
            nonlocal pid
            calls.append(path)
            pid = start_daemon(path, command, str(log_path), timeout=10)

        client = Client(f"unix://{socket_path}", autostart=autostart)
        assert client.call("GET", "/version")["ApiVersion"] == "1.45"
        assert calls == [socket_path]
        assert "fake ketchd serving" in log_path.read_text()
    finally:
        if pid is not None:
            stop_process(pid)


def stop_process(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # subprocess.Popen's finalizer reaped it already


def test_autostart_reports_early_exit(socket_dir: Path) -> None:
    log_path = socket_dir / "ketchd.log"
    command = [sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"]
    with pytest.raises(DaemonUnreachable) as raised:
        start_daemon(str(socket_dir / "ketch.sock"), command, str(log_path), timeout=10)
    assert str(raised.value) == f"ketchd exited with status 3 while starting; see {log_path}"
    assert log_path.read_text() == "bad config\n"
