"""ketch.deferred_ssl: ketchd's asyncio starts without ssl and loads it when TLS is first used.

Each case runs in a fresh interpreter, because asyncio must not be imported before ssl is
left out, and pytest has imported it already.
"""

from __future__ import annotations

import http.server
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.tls import make_loopback_certificate

LEFT_OUT_CODE = """
import sys

from ketch import deferred_ssl

print("left out:", deferred_ssl.leave_out())

import asyncio

print("ssl entry:", sys.modules.get("ssl", "absent"))
"""

# A TLS round trip through asyncio's server and ketch's HTTP client after load(), with
# ssl left out when asyncio was imported.
ROUND_TRIP_CODE = """
import sys

from ketch import deferred_ssl

deferred_ssl.leave_out()

import asyncio

from ketch.images.http_client import Session

cert, key = sys.argv[1], sys.argv[2]


async def serve(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nhello")
    await writer.drain()
    writer.close()


async def main():
    ssl = deferred_ssl.load()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with Session() as session:
            response = await session.request("GET", f"https://127.0.0.1:{port}/")
            async with response:
                print("body:", (await response.read()).decode())
    finally:
        listener.close()


asyncio.run(main())
"""


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_leave_out_keeps_ssl_from_asyncio() -> None:
    output = run_python(LEFT_OUT_CODE)

    assert "left out: True" in output
    assert "ssl entry: None" in output


def test_leave_out_after_asyncio_does_nothing() -> None:
    output = run_python("import asyncio\n" + LEFT_OUT_CODE)

    assert "left out: False" in output
    assert "ssl entry: <module 'ssl'" in output


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    return make_loopback_certificate(tmp_path_factory.mktemp("tls"))


def test_load_gives_asyncio_working_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    # The client's default context trusts the test certificate through SSL_CERT_FILE.
    env = {"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(cert)}

    output = run_python(ROUND_TRIP_CODE, str(cert), str(key), env=env)

    assert "body: hello" in output


# An HTTPS request in a process with ssl left out, where nothing but ketch's HTTP client
# calls load().
CLIENT_TLS_CODE = """
import sys

from ketch import deferred_ssl

deferred_ssl.leave_out()

import asyncio

from ketch.images.http_client import Session


async def fetch(url):
    async with Session() as session:
        async with await session.request("GET", url) as response:
            return await response.read()


print("body:", asyncio.run(fetch(sys.argv[1])).decode())
"""


@contextmanager
def https_server(cert: Path, key: Path, body: bytes) -> Iterator[str]:
    """Serve ``body`` over HTTPS on 127.0.0.1 from a thread and yield the URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_client_loads_ssl_itself(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    env = {"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(cert)}

    with https_server(cert, key, b"hello") as url:
        output = run_python(CLIENT_TLS_CODE, url, env=env)

    assert "body: hello" in output


def test_ketchd_modules_import_without_ssl() -> None:
    # A module-level "import ssl" in any of these would fail under ketchd's entry point.
    code = (
        "from ketch import deferred_ssl\n"
        "deferred_ssl.leave_out()\n"
        "import ketch.engine.daemon, ketch.api.server, ketch.images.pull, ketch.images.push\n"
        "import sys\n"
        "print('ssl entry:', sys.modules['ssl'])\n"
    )

    output = run_python(code)

    assert "ssl entry: None" in output


def test_links_work_with_ssl_left_out() -> None:
    # ketchd leaves ssl out, and making a bridge endpoint must neither need nor load it.
    code = (
        "from ketch import deferred_ssl\n"
        "deferred_ssl.leave_out()\n"
        "from ketch.network import links\n"
        "print('lo exists:', links.link_exists('lo'))\n"
        "print('routes read:', isinstance(links.host_routes(), list))\n"
        "import sys\n"
        "print('ssl entry:', sys.modules['ssl'])\n"
        "print('pyroute2 loaded:', 'pyroute2' in sys.modules)\n"
    )

    output = run_python(code)

    assert "lo exists: True" in output
    assert "routes read: True" in output
    assert "ssl entry: None" in output
    assert "pyroute2 loaded: False" in output


# Thread "first" stops in load() just before it removes the None entry, and thread "second"
# calls load() meanwhile. Unless load() serializes its callers, "second" imports ssl, and
# "first" then removes that module and imports a second one.
CONCURRENT_LOAD_CODE = """
import sys
import threading

from ketch import deferred_ssl

deferred_ssl.leave_out()

import asyncio.sslproto

paused = threading.Event()
resume = threading.Event()
modules = {}


# The line of load() that removes the None entry.
removal_line = next(
    number
    for number, line in enumerate(open(deferred_ssl.__file__), start=1)
    if "del sys.modules[" in line or "sys.modules.pop(" in line
)


def trace_lines(frame, event, arg):
    if event == "call":
        return trace_lines if frame.f_code is deferred_ssl.load.__code__ else None
    if event == "line" and frame.f_lineno == removal_line:
        paused.set()
        resume.wait(timeout=10)
    return trace_lines


def load_first():
    sys.settrace(trace_lines)
    modules["first"] = deferred_ssl.load()
    sys.settrace(None)


def load_second():
    modules["second"] = deferred_ssl.load()


first = threading.Thread(target=load_first)
first.start()
paused.wait(timeout=10)
second = threading.Thread(target=load_second)
second.start()
second.join(timeout=0.5)
print("second waited:", second.is_alive())
resume.set()
first.join()
second.join()
print("same module:", modules["first"] is modules["second"] is sys.modules["ssl"])
print("asyncio has it:", asyncio.sslproto.ssl is sys.modules["ssl"])
"""


def test_concurrent_load_imports_ssl_once() -> None:
    output = run_python(CONCURRENT_LOAD_CODE)

    assert "second waited: True" in output
    assert "same module: True" in output
    assert "asyncio has it: True" in output
