"""TLS for the API server's TCP connections, run by ketch over a plain asyncio transport.

asyncio's own TLS transport (CPython 3.11, ``asyncio.sslproto``) shuts the whole
connection down when the client sends a close_notify alert, whatever the protocol's
``eof_received`` returns. The docker CLI half-closes a hijacked attach or exec connection
once its stdin ends. Over TLS that is a close_notify after which it goes on reading (Go's
``tls.Conn.CloseWrite``), so the container's output and exit code would be lost.

Here an ``ssl.SSLObject`` over two memory BIOs does the TLS work between the socket's
transport and the HTTP connection. A close_notify from the client is an end of file for
the server, as a FIN is over plain TCP, and the server goes on writing until it closes the
connection itself. Then it sends its own close_notify before the FIN.

The ssl module comes from ``deferred_ssl.load``, because ketchd starts without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ketch import deferred_ssl

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

# Maximum plaintext bytes taken from the SSL object per read. A TLS record carries at most
# 16 KiB, so one read can take several records.
READ_SIZE = 65536
# The reply to a client that speaks plain HTTP to the TLS port.
PLAIN_HTTP_REPLY = (
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)

# A client that has not finished its handshake by then is disconnected. It is the same
# limit as asyncio's default ssl_handshake_timeout.
HANDSHAKE_TIMEOUT_SECONDS = 60.0

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_server(
    client_connected: ClientConnected, context: ssl.SSLContext, host: str, port: int
) -> asyncio.Server:
    """Listen on ``host:port`` and, after each client's TLS handshake, run
    ``client_connected(reader, writer)`` as ``asyncio.start_server`` does."""
    loop = asyncio.get_running_loop()

    def make_protocol() -> TLSServerProtocol:
        reader = asyncio.StreamReader(loop=loop)
        stream_protocol = asyncio.StreamReaderProtocol(reader, client_connected, loop=loop)
        return TLSServerProtocol(context, stream_protocol)

    return await loop.create_server(make_protocol, host=host, port=port)


class TLSServerProtocol(asyncio.Protocol):
    """The server's side of one TLS connection, between the socket's transport and the
    application's protocol, which reads and writes plaintext through a ``TLSTransport``."""

    def __init__(self, context: ssl.SSLContext, app_protocol: asyncio.Protocol) -> None:
        self._ssl = deferred_ssl.load()
        self._incoming = self._ssl.MemoryBIO()
        self._outgoing = self._ssl.MemoryBIO()
        self._ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._app_protocol = app_protocol
        self._socket_transport: asyncio.Transport | None = None
        self._app_transport: TLSTransport | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._socket_writing_paused = False
        # Set at the client's close_notify or, without one, its FIN.
        self._input_ended = False
        self._closing = False
        self._error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._socket_transport = transport
        loop = asyncio.get_running_loop()
        self._handshake_timer = loop.call_later(
            HANDSHAKE_TIMEOUT_SECONDS, self._abort_slow_handshake
        )

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)

        if self._app_transport is None and not self._continue_handshake():
            return

        self._read_application_data()
        self._flush()

    def eof_received(self) -> bool:
        """Handle the client's FIN: the end of input when it came without a close_notify.

        Returns whether the socket stays open for writing, which is the application's
        choice, as over plain TCP.
        """
        if self._app_transport is None:
            log.debug("TLS client %s closed the connection during the handshake", self._peer())
            return False
        if not self._input_ended:
            self._end_input()
        return not self._closing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._closing = True
        if self._app_transport is not None:
            self._app_protocol.connection_lost(exc if exc is not None else self._error)

    def pause_writing(self) -> None:
        self._socket_writing_paused = True
        if self._app_transport is not None:
            self._app_protocol.pause_writing()

    def resume_writing(self) -> None:
        self._socket_writing_paused = False
        if self._app_transport is not None:
            self._app_protocol.resume_writing()

    # The application's side, called by TLSTransport.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and hand it to the socket's transport."""
        if self._closing:
            # OpenSSL rejects writes after the close_notify, so the data is dropped, as
            # asyncio's TLS transport drops it.
            return
        view = memoryview(data)
        while view:
            try:
                written = self._ssl_object.write(view)
            except self._ssl.SSLError as error:
                self._fail(error)
                return
            view = view[written:]
        self._flush()

    def close(self) -> None:
        """Send close_notify and close the socket once its buffer is written."""
        if self._closing:
            return
        self._closing = True
        try:
            self._ssl_object.unwrap()
        except self._ssl.SSLWantReadError:
            # The close_notify is queued. The SSL object would go on to wait for the
            # client's, which the server does not need.
            pass
        except self._ssl.SSLError as error:
            log.debug("TLS client %s: cannot send close_notify: %s", self._peer(), error)
        self._flush()
        self.socket_transport.close()

    def abort(self) -> None:
        """Close the socket at once, dropping unwritten data."""
        self._closing = True
        self.socket_transport.abort()

    def is_closing(self) -> bool:
        """Return whether the connection is closed or being closed."""
        return self._closing or self.socket_transport.is_closing()

    def extra_info(self, name: str, default: Any = None) -> Any:
        """Return the TLS details asyncio's TLS transport offers, else the socket's."""
        # There is no "sslcontext" on purpose. asyncio.StreamReaderProtocol treats a
        # transport that has one as asyncio's TLS transport, and then closes the
        # connection at the client's end of file.
        if name == "ssl_object":
            return self._ssl_object
        if name == "peercert":
            return self._ssl_object.getpeercert()
        if name == "cipher":
            return self._ssl_object.cipher()
        if name == "compression":
            return self._ssl_object.compression()
        return self.socket_transport.get_extra_info(name, default)

    @property
    def app_protocol(self) -> asyncio.Protocol:
        """The protocol that reads and writes the plaintext."""
        return self._app_protocol

    @property
    def socket_transport(self) -> asyncio.Transport:
        """The transport of the TCP socket, which carries the TLS records."""
        assert self._socket_transport is not None
        return self._socket_transport

    # Steps of the connection.

    def _continue_handshake(self) -> bool:
        """Advance the handshake with the bytes received and return whether it is complete."""
        try:
            self._ssl_object.do_handshake()
        except self._ssl.SSLWantReadError:
            self._flush()
            return False
        except self._ssl.SSLError as error:
            # A client without a certificate signed by the CA ends here.
            log.info("TLS handshake with %s failed: %s", self._peer(), error)
            self._flush()
            if error.reason == "HTTP_REQUEST":
                # Plain HTTP to the TLS port: reply with an HTTP 400 error, as dockerd
                # does, so that the client shows the reason rather than a closed connection.
                self.socket_transport.write(PLAIN_HTTP_REPLY)
            self.socket_transport.close()
            return False

        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._app_transport = TLSTransport(self)
        self._app_protocol.connection_made(self._app_transport)
        if self._socket_writing_paused:
            self._app_protocol.pause_writing()
        return True

    def _read_application_data(self) -> None:
        while not self._input_ended and not self._closing:
            try:
                data = self._ssl_object.read(READ_SIZE)
            except self._ssl.SSLWantReadError:
                return
            except self._ssl.SSLZeroReturnError:
                # Raised for a close_notify once the server has sent its own.
                self._end_input()
                return
            except self._ssl.SSLError as error:
                self._fail(error)
                return
            if not data:
                # The client's close_notify: CPython returns no data for it while the
                # server has not sent its own. Unlike asyncio's TLS transport, keep the
                # connection open, because OpenSSL lets the server write until then.
                self._end_input()
                return
            self._app_protocol.data_received(data)

    def _end_input(self) -> None:
        self._input_ended = True
        keep_open = self._app_protocol.eof_received()
        if not keep_open:
            self.close()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.socket_transport.write(data)

    def _fail(self, error: Exception) -> None:
        """Abort a connection whose TLS layer failed and keep ``error`` for the application."""
        log.info("TLS connection with %s failed: %s", self._peer(), error)
        self._error = error
        self._flush()
        self.abort()

    def _abort_slow_handshake(self) -> None:
        log.info(
            "TLS client %s did not finish its handshake within %g s, so it is disconnected",
            self._peer(),
            HANDSHAKE_TIMEOUT_SECONDS,
        )
        self.abort()

    def _peer(self) -> str:
        peer = self.socket_transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer)


class TLSTransport(asyncio.Transport):
    """The plaintext transport that the application's protocol writes to and closes."""

    def __init__(self, connection: TLSServerProtocol) -> None:
        super().__init__()
        self._connection = connection

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._connection.write(data)

    def can_write_eof(self) -> bool:
        # The API server never half-closes a client connection, so there is no write_eof
        # (a close_notify), as in asyncio's TLS transport.
        return False

    def close(self) -> None:
        self._connection.close()

    def abort(self) -> None:
        self._connection.abort()

    def is_closing(self) -> bool:
        return self._connection.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._connection.extra_info(name, default)

    def pause_reading(self) -> None:
        self._connection.socket_transport.pause_reading()

    def resume_reading(self) -> None:
        self._connection.socket_transport.resume_reading()

    def is_reading(self) -> bool:
        return self._connection.socket_transport.is_reading()

    def get_write_buffer_size(self) -> int:
        # The memory BIO is emptied into the socket's transport after every write.
        return self._connection.socket_transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._connection.socket_transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._connection.socket_transport.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("a TLS connection of the API server keeps its protocol")

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._connection.app_protocol
