"""The userland proxy: forwards a published host port to a container's address, from
ketchd.

TCP: each accepted connection gets a connection to the container. ``SpliceTcpProxy``, the
default, accepts and connects in the event loop and then copies each direction on a thread
of its own with splice(2) through a pipe, so the bytes never enter Python and the event
loop stays free. In paired 512 MiB transfers through two ports of one container (2-core
machine, December 2026), it moved 20 to 40 % more bytes per second than the asyncio copy,
with about half of ketchd's CPU time per GiB. ``TcpProxy`` copies with asyncio protocols
and is used where os.splice is missing: when one side's send buffer passes its high-water
mark, reading from the other side pauses until the buffer drains. Both bound memory,
since a slow reader holds back a fast writer, and both pass an EOF on as a shutdown of
the write half, so half-closed connections work. A connection ends when both halves are
closed or either side resets.

UDP: each client address is a flow with a socket of its own connected to the container,
so replies go back to the client that sent the request. A flow ends after
``UDP_IDLE_SECONDS`` without traffic in either direction, as docker's proxy does.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

logger = logging.getLogger(__name__)

# Send-buffer marks of each TCP side, in bytes: reading from the peer pauses above HIGH.
WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 10.0
# docker-proxy (moby, udp_proxy.go: UDPConnTrackTimeout) also closes a flow after 90 s idle.
UDP_IDLE_SECONDS = 90.0
UDP_MAX_FLOWS = 4096
# Bytes per splice(2) call, and the pipe size asked for with F_SETPIPE_SZ (fcntl.h).
SPLICE_CHUNK = 1024 * 1024
F_SETPIPE_SZ = 1031
SPLICE_MOVE = getattr(os, "SPLICE_F_MOVE", 1)
# Pause after a failed accept (EMFILE, for example), so that connections can end first.
ACCEPT_RETRY_SECONDS = 0.1
# After the first failed accept is logged, repeats are counted and summed up in one line at
# most this often. The loop retries 10 times a second, so a lasting EMFILE would otherwise
# write 600 lines a minute per port. One line a minute still shows, with a delay of at
# most a minute, that the failure goes on and how often it happens.
ACCEPT_FAILURE_LOG_SECONDS = 60.0


class _TcpSide(asyncio.Protocol):
    """One socket of a proxied TCP connection; ``peer`` is the other one."""

    def __init__(self, connection: _TcpConnection) -> None:
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.peer: _TcpSide | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
        if peer is None or peer.eof:
            self.connection.close()
            return False
        return True  # keep the other direction open

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.close()


class _TcpConnection:
    """A client connection and its connection to the container."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client = _ClientSide(self)
        self.backend = _TcpSide(self)
        self.client.peer = self.backend
        self.backend.peer = self.client
        self.closed = False

    def close(self) -> None:
        """Close both sockets once; a transport's close still sends what it has buffered."""
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.backend):
            if side.transport is not None:
                side.transport.close()
        self.proxy.connections.discard(self)

    def abort(self) -> None:
        self.closed = True
        for side in (self.client, self.backend):
            if side.transport is not None:
                side.transport.abort()


class TcpProxy:
    """Forwards connections from a listening host socket to ``target`` (address, port)."""

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self._listener = listener
        self._target = target
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: set[_TcpConnection] = set()

    def retarget(self, target: tuple[str, int]) -> None:
        """Send new connections to ``target``; connections made before keep their backend."""
        self._target = target

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, sock=self._listener)

    def _accept(self) -> asyncio.Protocol:
        connection = _TcpConnection(self)
        self.connections.add(connection)
        task = asyncio.get_running_loop().create_task(self._connect_backend(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return connection.client

    async def _connect_backend(self, connection: _TcpConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: connection.backend, *self._target),
                CONNECT_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError) as error:
            logger.debug("cannot connect to %s:%d: %s", *self._target, error)
            connection.close()
            return
        if connection.closed:
            connection.abort()
            return
        connection.client.backend_connected()

    def close(self) -> None:
        """Stop listening and drop every proxied connection."""
        if self._server is not None:
            self._server.close()
        else:
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self.connections):
            connection.abort()
        self.connections.clear()


class _ClientSide(_TcpSide):
    """The accepted side, which buffers what the client sends until the container's side is
    connected.

    NOTE: pause_reading() inside connection_made() does not hold on Python 3.11, because
    the transport adds its reader after that call, so the first data is buffered here and
    reading pauses from data_received() instead.
    """

    def __init__(self, connection: _TcpConnection) -> None:
        super().__init__(connection)
        self.early_data: list[bytes] = []
        self.early_eof = False

    def data_received(self, data: bytes) -> None:
        if self.connection.backend.transport is None:
            self.early_data.append(data)
            assert self.transport is not None
            self.transport.pause_reading()
            return
        super().data_received(data)

    def eof_received(self) -> bool:
        if self.connection.backend.transport is None:
            self.early_eof = True
            return True
        return super().eof_received()

    def backend_connected(self) -> None:
        """Send what arrived before the container's side was connected; read again."""
        for data in self.early_data:
            super().data_received(data)
        self.early_data.clear()
        if self.early_eof:
            if not super().eof_received():
                self.connection.close()
            return
        if self.transport is not None:
            self.transport.resume_reading()


class _SplicedConnection:
    """A client connection and its connection to the container, copied by two threads with
    splice(2) through a pipe each, so the bytes never enter Python."""

    def __init__(
        self, proxy: SpliceTcpProxy, client: socket.socket, backend: socket.socket
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.backend = backend
        self._running = 2
        self._lock = threading.Lock()

    def start(self) -> None:
        for source, destination in ((self.client, self.backend), (self.backend, self.client)):
            threading.Thread(
                target=self._copy, args=(source, destination), name="ketch-port-splice", daemon=True
            ).start()

    def _copy(self, source: socket.socket, destination: socket.socket) -> None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(write_end, F_SETPIPE_SZ, SPLICE_CHUNK)
        except OSError:
            pass  # a smaller pipe still works, with more system calls
        try:
            while moved := os.splice(source.fileno(), write_end, SPLICE_CHUNK, flags=SPLICE_MOVE):
                while moved:
                    moved -= os.splice(read_end, destination.fileno(), moved, flags=SPLICE_MOVE)
            destination.shutdown(socket.SHUT_WR)  # pass the EOF on: the other way stays open
        except OSError as error:
            logger.debug("proxied connection ended: %s", error)
            self.abort()
        finally:
            os.close(read_end)
            os.close(write_end)
            self._finish_one()

    def _finish_one(self) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            self.client.close()
            self.backend.close()
            self.proxy.forget(self)

    def abort(self) -> None:
        """Wake both threads: a shut-down socket ends their splice calls."""
        for sock in (self.client, self.backend):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed or not connected


class AcceptFailureLog:
    """Rate-limited log of the failed accepts of one listening socket.

    The first failure is logged at once, then the count of repeats and the last error at
    most once per ``interval`` seconds, and the repeats not logged yet at ``flush``.
    """

    def __init__(
        self,
        address: Any,
        interval: float = ACCEPT_FAILURE_LOG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = address
        self._interval = interval
        self._clock = clock
        self._last_logged: float | None = None
        self._unlogged = 0
        self._last_error: OSError | None = None

    def failed(self, error: OSError) -> None:
        """Count a failed accept, and log it or the repeats since the last line when due."""
        self._unlogged += 1
        self._last_error = error
        self._log_if_due()

    def accepted(self) -> None:
        """Log the repeats not logged yet, when due, once accepting works again."""
        if self._unlogged:
            self._log_if_due()

    def flush(self) -> None:
        """Log the repeats not logged yet, due or not, because the proxy is closing."""
        if self._unlogged:
            self._log()

    def _log_if_due(self) -> None:
        if self._last_logged is None or self._clock() - self._last_logged >= self._interval:
            self._log()

    def _log(self) -> None:
        if self._unlogged == 1:
            logger.warning(
                "failed to accept connections on %s: %s, retrying every %g s",
                self._address,
                self._last_error,
                ACCEPT_RETRY_SECONDS,
            )
        else:
            logger.warning(
                "failed to accept connections on %s %d more times since the last message, "
                "last error: %s",
                self._address,
                self._unlogged,
                self._last_error,
            )
        self._last_logged = self._clock()
        self._unlogged = 0


class SpliceTcpProxy:
    """Forwards connections like ``TcpProxy``, but copies with splice(2) on worker threads:
    two threads per connection, which block in the kernel, so the event loop only accepts
    and connects.

    NOTE: the threads are not pooled or capped, so N open connections cost 2N threads.
    """

    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self._listener = listener
        self._target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[_SplicedConnection] = set()
        self._lock = threading.Lock()
        self._accept_failures = AcceptFailureLog(listener.getsockname())

    def retarget(self, target: tuple[str, int]) -> None:
        """Send new connections to ``target``; connections made before keep their backend."""
        self._target = target

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._acceptor = self._loop.create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(self._listener)
            except OSError as error:
                self._accept_failures.failed(error)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            self._accept_failures.accepted()
            task = loop.create_task(self._connect_backend(client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect_backend(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._target[0] else socket.AF_INET
        backend = socket.socket(family, socket.SOCK_STREAM)
        backend.setblocking(False)
        try:
            await asyncio.wait_for(
                loop.sock_connect(backend, self._target), CONNECT_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError) as error:
            logger.debug("cannot connect to %s:%d: %s", *self._target, error)
            backend.close()
            client.close()
            return
        except asyncio.CancelledError:
            # The proxy is closing, and no connection owns these sockets yet.
            backend.close()
            client.close()
            raise
        for sock in (client, backend):
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _SplicedConnection(self, client, backend)
        with self._lock:
            self._connections.add(connection)
        connection.start()

    def forget(self, connection: _SplicedConnection) -> None:
        with self._lock:
            self._connections.discard(connection)

    @property
    def connections(self) -> set[_SplicedConnection]:
        with self._lock:
            return set(self._connections)

    def close(self) -> None:
        """Stop listening and end every proxied connection."""
        if self._acceptor is not None:
            self._acceptor.cancel()
        self._accept_failures.flush()
        for task in list(self._tasks):
            task.cancel()
        self._stop_watching_listener()
        self._listener.close()
        for connection in self.connections:
            connection.abort()

    def _stop_watching_listener(self) -> None:
        """Remove the event loop's reader of the listener before the listener closes.

        A cancelled sock_accept() removes its reader only in a callback one loop iteration
        later (CPython 3.11 selector_events). A socket opened before then can get the
        listener's descriptor number, and its transport joins the stale selector entry that
        epoll no longer watches, so it never reads. The supervisor connection that a
        ``--rm`` removal opens right after the exit hung that way. remove_reader() cancels
        the accept's handle, so the later callback does nothing, as in asyncio's own
        Server.close().
        """
        if self._loop is None or self._loop.is_closed() or self._listener.fileno() == -1:
            return
        self._loop.remove_reader(self._listener)


class _UdpFlow(asyncio.DatagramProtocol):
    """The container's side of one client's UDP flow."""

    def __init__(self, proxy: UdpProxy, client: Any) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.last_active = time.monotonic()
        self.proxy.reply(data, self.client)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port unreachable from the container, for example; the client retries.
        logger.debug("UDP flow from %s: %s", self.client, exc)


class UdpProxy(asyncio.DatagramProtocol):
    """Forwards datagrams from a bound host socket to ``target`` and replies back."""

    def __init__(self, sock: socket.socket, target: tuple[str, int]) -> None:
        self._sock = sock
        self._target = target
        self._transport: asyncio.DatagramTransport | None = None
        self._flows: dict[Any, _UdpFlow] = {}
        self._pending: dict[Any, list[bytes]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropped = 0

    def retarget(self, target: tuple[str, int]) -> None:
        """Send datagrams to ``target`` from now on. The flows open now are closed, because
        their sockets are connected to the old target."""
        self._target = target
        for client in list(self._flows):
            self._close_flow(client)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=self._sock)
        self._sweeper = loop.create_task(self._sweep_idle_flows())

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self._flows.get(addr)
        if flow is not None and flow.transport is not None:
            flow.last_active = time.monotonic()
            flow.transport.sendto(data)
            return
        if addr in self._pending:
            self._pending[addr].append(data)
            return
        if len(self._flows) + len(self._pending) >= UDP_MAX_FLOWS:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                logger.warning(
                    "UDP proxy to %s:%d has %d flows, the maximum; dropped %d datagrams",
                    *self._target,
                    UDP_MAX_FLOWS,
                    self._dropped,
                )
            return
        self._pending[addr] = [data]
        task = asyncio.get_running_loop().create_task(self._open_flow(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_flow(self, client: Any) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._target[0] else socket.AF_INET
        try:
            _, flow = await loop.create_datagram_endpoint(
                lambda: _UdpFlow(self, client), remote_addr=self._target, family=family
            )
        except OSError as error:
            logger.debug("cannot open a UDP flow to %s:%d: %s", *self._target, error)
            self._pending.pop(client, None)
            return
        self._flows[client] = flow
        for data in self._pending.pop(client, []):
            flow.transport.sendto(data)  # type: ignore[union-attr]

    def reply(self, data: bytes, client: Any) -> None:
        if self._transport is not None:
            self._transport.sendto(data, client)

    async def _sweep_idle_flows(self) -> None:
        while True:
            await asyncio.sleep(min(UDP_IDLE_SECONDS / 3, 30.0))
            cutoff = time.monotonic() - UDP_IDLE_SECONDS
            for client, flow in list(self._flows.items()):
                if flow.last_active < cutoff:
                    self._close_flow(client)

    def _close_flow(self, client: Any) -> None:
        flow = self._flows.pop(client, None)
        if flow is not None and flow.transport is not None:
            flow.transport.close()

    @property
    def flow_count(self) -> int:
        return len(self._flows)

    def close(self) -> None:
        """Stop receiving and close every flow."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        for client in list(self._flows):
            self._close_flow(client)
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()
        else:
            self._sock.close()


Proxy = TcpProxy | SpliceTcpProxy | UdpProxy


def make_proxy(protocol: str, sock: socket.socket, target: tuple[str, int]) -> Proxy:
    """Return a proxy for a bound host socket of ``protocol`` ("tcp" or "udp")."""
    if protocol == "tcp":
        if hasattr(os, "splice"):
            return SpliceTcpProxy(sock, target)
        return TcpProxy(sock, target)
    return UdpProxy(sock, target)
