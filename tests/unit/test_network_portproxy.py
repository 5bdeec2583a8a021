"""The userland proxy between loopback sockets: TCP both ways, half-close, UDP flows."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ketch.network import portproxy
from ketch.network.ports import open_host_socket

pytestmark = pytest.mark.timeout(30)


async def _echo_server() -> tuple[asyncio.Server, int]:
    """A TCP server that echoes until EOF, then sends "bye" and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write(b"bye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


TCP_PROXIES = [portproxy.TcpProxy, portproxy.SpliceTcpProxy]


async def _tcp_proxy(kind: type, target_port: int) -> tuple[portproxy.Proxy, int]:
    listener = open_host_socket("tcp", "127.0.0.1", 0)
    port = listener.getsockname()[1]
    proxy = kind(listener, ("127.0.0.1", target_port))
    await proxy.start()
    return proxy, port


async def _tcp_exchange(port: int, message: bytes) -> bytes:
    """Send ``message`` to ``port``, shut the write half, and return all that comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(message)
    writer.write_eof()
    reply = await reader.read()
    writer.close()
    return reply


@pytest.mark.parametrize("kind", TCP_PROXIES)
def test_tcp_echo_and_half_close(kind: type) -> None:
    async def scenario() -> bytes:
        server, server_port = await _echo_server()
        proxy, port = await _tcp_proxy(kind, server_port)
        try:
            return await _tcp_exchange(port, b"hello")
        finally:
            proxy.close()
            server.close()

    assert asyncio.run(scenario()) == b"hellobye"


@pytest.mark.parametrize("kind", TCP_PROXIES)
def test_tcp_large_transfer(kind: type) -> None:
    payload = bytes(range(256)) * 40000  # about 10 MB, past every buffer mark

    async def scenario() -> int:
        server, server_port = await _echo_server()
        proxy, port = await _tcp_proxy(kind, server_port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            reply = await reader.read(-1)
            await sender
            writer.close()
            return len(reply) if reply == payload + b"bye" else -1
        finally:
            proxy.close()
            server.close()

    assert asyncio.run(scenario()) == len(payload) + 3


@pytest.mark.parametrize("kind", TCP_PROXIES)
def test_tcp_backend_refused_closes_client(kind: type) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]

    async def scenario() -> bytes:
        proxy, port = await _tcp_proxy(kind, closed_port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            reply = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return reply
        finally:
            proxy.close()

    assert asyncio.run(scenario()) == b""


@pytest.mark.parametrize("kind", TCP_PROXIES)
def test_tcp_close_stops_listening(kind: type) -> None:
    async def scenario() -> int:
        server, server_port = await _echo_server()
        proxy, port = await _tcp_proxy(kind, server_port)
        proxy.close()
        server.close()
        await asyncio.sleep(0)
        return port

    port = asyncio.run(scenario())
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect(("127.0.0.1", port))


@pytest.mark.parametrize("kind", TCP_PROXIES)
def test_tcp_close_lets_descriptor_be_reused(kind: type) -> None:
    """A socket that gets the closed listener's descriptor number at once still reads."""

    async def scenario() -> tuple[bool, bytes, list[str]]:
        errors: list[str] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: errors.append(context["message"])
        )
        listener = open_host_socket("tcp", "127.0.0.1", 0)
        listener_fd = listener.fileno()
        proxy = kind(listener, ("127.0.0.1", 1))
        await proxy.start()
        await asyncio.sleep(0)  # the acceptor now waits for a connection in the event loop

        proxy.close()
        ours, theirs = socket.socketpair()
        reused = ours.fileno() == listener_fd
        reader, writer = await asyncio.open_connection(sock=ours)

        theirs.sendall(b"still read")
        try:
            data = await asyncio.wait_for(reader.readexactly(10), 5)
        except TimeoutError:
            data = b""
        writer.close()
        theirs.close()
        return reused, data, errors

    reused, data, errors = asyncio.run(scenario())
    assert reused
    assert data == b"still read"
    assert errors == []


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data.upper(), addr)  # type: ignore[attr-defined]


async def _udp_exchange(port: int, message: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            replies.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(message)
        return await asyncio.wait_for(replies.get(), 10)
    finally:
        transport.close()


def test_udp_flows_per_client() -> None:
    async def scenario() -> tuple[bytes, bytes, int]:
        loop = asyncio.get_running_loop()
        echo, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        host = open_host_socket("udp", "127.0.0.1", 0)
        target = echo.get_extra_info("sockname")
        proxy = portproxy.UdpProxy(host, target)
        await proxy.start()
        try:
            port = host.getsockname()[1]
            first = await _udp_exchange(port, b"ping")
            second = await _udp_exchange(port, b"pong")
            return first, second, proxy.flow_count
        finally:
            proxy.close()
            echo.close()

    first, second, flows = asyncio.run(scenario())
    assert first == b"PING"
    assert second == b"PONG"
    assert flows == 2


def test_udp_idle_flow_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portproxy, "UDP_IDLE_SECONDS", 0.2)

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        echo, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        host = open_host_socket("udp", "127.0.0.1", 0)
        proxy = portproxy.UdpProxy(host, echo.get_extra_info("sockname"))
        await proxy.start()
        try:
            await _udp_exchange(host.getsockname()[1], b"ping")
            await asyncio.sleep(0.6)
            return proxy.flow_count
        finally:
            proxy.close()
            echo.close()

    assert asyncio.run(scenario()) == 0


def test_make_proxy_prefers_splice() -> None:
    listener = open_host_socket("tcp", "127.0.0.1", 0)
    with listener:
        proxy = portproxy.make_proxy("tcp", listener, ("127.0.0.1", 1))
    assert isinstance(proxy, portproxy.SpliceTcpProxy)


def test_splice_close_ends_connections() -> None:
    async def scenario() -> int:
        server, server_port = await _echo_server()
        proxy, port = await _tcp_proxy(portproxy.SpliceTcpProxy, server_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        await reader.readexactly(4)
        proxy.close()
        ended = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        return len(ended)

    assert asyncio.run(scenario()) == 0


@pytest.mark.parametrize("kind", TCP_PROXIES)
def test_tcp_retarget_new_connections(kind: type) -> None:
    async def scenario() -> bytes:
        old_server, _ = await _echo_server()
        new_server, new_port = await _echo_server()
        old_port = old_server.sockets[0].getsockname()[1]
        proxy, port = await _tcp_proxy(kind, old_port)
        old_server.close()
        await old_server.wait_closed()
        try:
            proxy.retarget(("127.0.0.1", new_port))
            return await _tcp_exchange(port, b"again")
        finally:
            proxy.close()
            new_server.close()

    assert asyncio.run(scenario()) == b"againbye"


def test_udp_retarget_closes_flows() -> None:
    async def scenario() -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        old_echo, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        new_echo, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        host = open_host_socket("udp", "127.0.0.1", 0)
        proxy = portproxy.UdpProxy(host, old_echo.get_extra_info("sockname"))
        await proxy.start()
        try:
            port = host.getsockname()[1]
            await _udp_exchange(port, b"ping")
            old_echo.close()
            proxy.retarget(new_echo.get_extra_info("sockname"))
            flows_after_retarget = proxy.flow_count
            reply = await _udp_exchange(port, b"pong")
            return flows_after_retarget, reply
        finally:
            proxy.close()
            new_echo.close()

    flows, reply = asyncio.run(scenario())
    assert flows == 0
    assert reply == b"PONG"


def test_splice_accept_failures_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # A socket that is bound but not listening fails every accept at once, with EINVAL.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)

    async def scenario() -> int:
        proxy = portproxy.SpliceTcpProxy(listener, ("127.0.0.1", 1))
        await proxy.start()
        await asyncio.sleep(10 * portproxy.ACCEPT_RETRY_SECONDS)
        lines_before_close = len(caplog.records)
        proxy.close()
        return lines_before_close

    with caplog.at_level("WARNING", logger=portproxy.__name__):
        lines_before_close = asyncio.run(scenario())

    messages = [record.getMessage() for record in caplog.records]
    assert lines_before_close == 1
    assert "failed to accept connections on" in messages[0]
    assert len(messages) == 2
    assert "more times since the last message" in messages[1]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_accept_failure_log_first_then_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    failures = portproxy.AcceptFailureLog(("127.0.0.1", 8080), interval=60.0, clock=clock)
    error = OSError(24, "Too many open files")

    with caplog.at_level("WARNING", logger=portproxy.__name__):
        for _ in range(20):
            failures.failed(error)
            clock.now += 0.1
        first_lines = len(caplog.records)
        clock.now = 61.0
        failures.failed(error)

    messages = [record.getMessage() for record in caplog.records]
    assert first_lines == 1
    assert "Too many open files" in messages[0]
    assert "8080" in messages[0]
    assert len(messages) == 2
    assert "20 more times" in messages[1]


def test_accept_failure_log_summary_on_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    failures = portproxy.AcceptFailureLog(("127.0.0.1", 8080), interval=60.0, clock=clock)
    error = OSError(24, "Too many open files")

    with caplog.at_level("WARNING", logger=portproxy.__name__):
        failures.failed(error)
        failures.failed(error)
        failures.failed(error)
        failures.accepted()
        before_due = len(caplog.records)
        clock.now = 60.0
        failures.accepted()
        failures.accepted()

    messages = [record.getMessage() for record in caplog.records]
    assert before_due == 1
    assert len(messages) == 2
    assert "2 more times" in messages[1]
