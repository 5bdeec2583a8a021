"""One client connection to the supervisor socket, with non-blocking buffered I/O.

A connection starts in request mode: the supervisor reads request lines and responds to
each one. ``wait`` and a deferred ``delete`` park the connection until their response is
ready.
``attach`` and ``events`` turn it into an outgoing stream, and an attach with stdin also
turns what the client sends into the container's stdin.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable

from ketch.errors import InvalidArgument, KetchError
from ketch.supervisor import protocol
from ketch.supervisor.eventloop import EventLoop
from ketch.supervisor.plainlog import get_logger

log = get_logger(__name__)

RECEIVE_SIZE = 64 * 1024


class Mode(enum.Enum):
    REQUESTS = "requests"
    PARKED = "parked"
    ATTACHED = "attached"
    EVENTS = "events"


# False at run time, so that the supervisor process does not import typing (see
# ketch.supervisor.records). Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    RequestHandler = Callable[["Connection", dict[str, Any]], None]


class Connection:
    """A client socket registered with the event loop.

    ``send`` queues bytes and writes what the socket takes. A caller that streams to the
    client checks its result and drops the client once it is ``MAX_CLIENT_BACKLOG`` behind.
    """

    def __init__(self, loop: EventLoop, sock: socket.socket, handle_request: RequestHandler):
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.mode = Mode.REQUESTS
        self.closed = False
        self.label = f"client fd {self.fd}"
        # Set by an attach with stdin: where the client's bytes go, and what its end of
        # stream does.
        self.input_sink: Callable[[bytes], None] | None = None
        self.input_end: Callable[[], None] | None = None
        self._loop = loop
        self._handle_request = handle_request
        self._input = bytearray()
        self._output = bytearray()
        self._reading = True
        self._peer_done = False
        self._close_when_flushed = False
        self._close_callbacks: list[Callable[[Connection], None]] = []
        loop.register(self.fd, self)

    @property
    def backlog(self) -> int:
        """Bytes queued for the client and not yet taken by the socket."""
        return len(self._output)

    def add_close_callback(self, callback: Callable[[Connection], None]) -> None:
        self._close_callbacks.append(callback)

    def send(self, data: bytes) -> bool:
        """Queue ``data``; return False when the client is more than the backlog limit behind."""
        if self.closed or self._close_when_flushed:
            return False
        self._output += data
        self._flush()
        return not self.closed and len(self._output) <= protocol.MAX_CLIENT_BACKLOG

    def send_message(self, message: dict[str, Any]) -> bool:
        return self.send(protocol.encode_message(message))

    def send_error(self, error: KetchError) -> bool:
        return self.send_message(protocol.error_response(error))

    def resume_requests(self) -> None:
        """Return a parked connection to request mode and serve requests it already sent."""
        self.mode = Mode.REQUESTS
        if self._peer_done:
            self.finish()
        else:
            self._serve_buffered_requests()

    def pause_reading(self) -> None:
        self._reading = False
        self._update_interest()

    def resume_reading(self) -> None:
        self._reading = True
        self._update_interest()

    def finish(self) -> None:
        """Close the connection once everything queued has been sent."""
        self._close_when_flushed = True
        if not self._output:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.unregister(self.fd)
        self.sock.close()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            callback(self)

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            log.debug("%s: receive failed: %s", self.label, error)
            self.close()
            return
        if not data:
            self._on_peer_done()
        elif self.mode is Mode.ATTACHED:
            if self.input_sink is not None:
                self.input_sink(data)
        elif self.mode is not Mode.EVENTS:
            self._input += data
            if self.mode is Mode.REQUESTS:
                self._serve_buffered_requests()
            if len(self._input) > protocol.MAX_REQUEST_BYTES:
                self._reject_oversized_request()

    def on_writable(self) -> None:
        self._flush()

    def _serve_buffered_requests(self) -> None:
        while self.mode is Mode.REQUESTS and not self.closed:
            newline = self._input.find(b"\n")
            if newline < 0:
                return
            line = bytes(self._input[:newline])
            del self._input[: newline + 1]
            if not line.strip():
                continue
            try:
                request = protocol.decode_request(line)
            except KetchError as error:
                self.send_error(error)
                continue
            self._handle_request(self, request)
        # Bytes after an attach request are the start of the client's stdin.
        if self.mode is Mode.ATTACHED and self._input and self.input_sink is not None:
            data, self._input = bytes(self._input), bytearray()
            self.input_sink(data)

    def _reject_oversized_request(self) -> None:
        limit = protocol.MAX_REQUEST_BYTES
        self.send_error(InvalidArgument(f"invalid request: longer than {limit} bytes"))
        self._input.clear()
        self.finish()

    def _on_peer_done(self) -> None:
        """Handle the client's end of stream: it may still read what it asked for."""
        self._peer_done = True
        self._reading = False
        self._update_interest()
        if self.mode is Mode.REQUESTS:
            self._serve_buffered_requests()
            if self.mode is Mode.REQUESTS:
                self.finish()
        elif self.mode is Mode.ATTACHED and self.input_end is not None:
            self.input_end()
        elif self.mode is not Mode.PARKED:
            # An attach client without stdin, or an event subscriber, has gone away.
            self.close()

    def _flush(self) -> None:
        while self._output:
            try:
                sent = self.sock.send(self._output)
            except BlockingIOError:
                break
            except OSError as error:
                log.debug("%s: send failed: %s", self.label, error)
                self.close()
                return
            del self._output[:sent]
        if not self._output and self._close_when_flushed:
            self.close()
            return
        self._update_interest()

    def _update_interest(self) -> None:
        if not self.closed:
            self._loop.modify(self.fd, self, read=self._reading, write=bool(self._output))
