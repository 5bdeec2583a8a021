"""A supervised container's stdio: output pipes, the json-file log, attach clients, stdin.

The supervisor reads the container's stdout and stderr pipes as they become readable,
appends every chunk to the log and forwards it as Engine API frames to the attach clients
that asked for that stream. A container finishes when three things have happened, in any
order: its init has been reaped, both output pipes have reached end of file (so the log
is complete), and every attach client has been sent its last frame or been dropped. Only
then does the supervisor report the exit, so that a client that sees the exit has had all
of the output.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable

from ketch.supervisor import protocol
from ketch.supervisor.connection import Connection, Mode
from ketch.supervisor.eventloop import EventLoop, Timer
from ketch.supervisor.logs import JsonFileLog
from ketch.supervisor.plainlog import get_logger
from ketch.supervisor.records import ContainerRecord

log = get_logger(__name__)

READ_SIZE = 64 * 1024

# After the init exits, processes outside the container's pid namespace may still keep the
# output pipes open (without a pid namespace, any of its processes may). The pipes are read
# for at most this long before the supervisor closes them and records the exit.
DRAIN_TIMEOUT_SECONDS = 5.0

# After the output ends, attach clients get this long to take their queued frames before
# they are dropped and the exit is reported.
ATTACH_FLUSH_TIMEOUT_SECONDS = 10.0

# Bytes queued for the container's stdin before the attach client is no longer read.
MAX_STDIN_BACKLOG = 1 << 20


class OutputPipe:
    """The supervisor's read end of the container's stdout or stderr pipe."""

    def __init__(self, container: Container, stream: int, fd: int) -> None:
        self.container = container
        self.stream = stream
        self.fd = fd

    def on_readable(self) -> None:
        self.container.read_output(self)

    def on_writable(self) -> None:
        pass


class StdinPipe:
    """The supervisor's write end of the container's stdin pipe, fed by attach clients."""

    def __init__(self, loop: EventLoop, container_id: str, fd: int) -> None:
        self.fd = fd
        self.closed = False
        self._loop = loop
        self._container_id = container_id
        self._pending = bytearray()
        self._paused_sources: list[Connection] = []
        self._close_when_drained = False

    def write(self, data: bytes, source: Connection) -> None:
        if self.closed or self._close_when_drained:
            return
        self._pending += data
        self._flush()
        if len(self._pending) > MAX_STDIN_BACKLOG and not source.closed:
            source.pause_reading()
            self._paused_sources.append(source)

    def close_when_drained(self) -> None:
        self._close_when_drained = True
        if not self._pending:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.unregister(self.fd)
        os.close(self.fd)
        self._pending.clear()
        self._resume_sources()

    def on_readable(self) -> None:
        pass

    def on_writable(self) -> None:
        self._flush()

    def _flush(self) -> None:
        while self._pending:
            try:
                written = os.write(self.fd, self._pending)
            except BlockingIOError:
                break
            except OSError as error:
                # The container closed its stdin or exited; what it did not read is lost.
                log.debug("container %s: stdin closed: %s", self._container_id, error)
                self.close()
                return
            del self._pending[:written]
        if not self._pending:
            self._resume_sources()
            if self._close_when_drained:
                self.close()
                return
        self._loop.modify(self.fd, self, read=False, write=bool(self._pending))

    def _resume_sources(self) -> None:
        sources, self._paused_sources = self._paused_sources, []
        for source in sources:
            if not source.closed:
                source.resume_reading()


class Container:
    """The live side of one container: its record, pipes, log, clients and timers."""

    def __init__(
        self,
        loop: EventLoop,
        record: ContainerRecord,
        *,
        log_file: JsonFileLog | None,
        output_fds: dict[int, int],
        stdin_fd: int | None,
        on_finished: Callable[[Container], None],
        console_fd: int = -1,
        exit_trailer: bool = False,
    ) -> None:
        self.record = record
        # The pty master of a process with a terminal, for resizing; -1 without one.
        self.console_fd = console_fd
        # Whether attach clients get a STREAM_EXIT frame with the exit code before their
        # stream ends, which holds their end until the process has exited (execs).
        self.exit_trailer = exit_trailer
        self.exit_code: int | None = record.exit_code
        self.finished = record.status == "stopped"
        self.waiters: list[Connection] = []
        self.delete_requests: list[Connection] = []
        self._loop = loop
        self._log_file = log_file
        self._on_finished = on_finished
        self._attachers: dict[Connection, frozenset[int]] = {}
        self._outputs: dict[int, OutputPipe] = {}
        self._timers: list[Timer] = []
        self._exit_time_ns = 0
        self._closed = False
        for stream, fd in output_fds.items():
            os.set_blocking(fd, False)
            pipe = OutputPipe(self, stream, fd)
            self._outputs[stream] = pipe
            loop.register(fd, pipe)
        self.stdin: StdinPipe | None = None
        if stdin_fd is not None:
            os.set_blocking(stdin_fd, False)
            self.stdin = StdinPipe(loop, record.id, stdin_fd)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def exited(self) -> bool:
        """Whether the init has been reaped, even if the exit is not reported yet."""
        return self.exit_code is not None

    @property
    def output_ended(self) -> bool:
        return not self._outputs

    @property
    def exit_time_ns(self) -> int:
        """When the init was reaped, in nanoseconds since the epoch."""
        return self._exit_time_ns

    def attach(
        self,
        connection: Connection,
        streams: frozenset[int],
        stdin: bool,
        close_stdin: bool = True,
    ) -> None:
        """Stream the container's output to ``connection`` until the output ends.

        With ``stdin`` the client's bytes go to the container's stdin. The client's end of
        stream closes that stdin when ``close_stdin`` is set, and is ignored otherwise.
        """
        connection.mode = Mode.ATTACHED
        if stdin and self.stdin is not None and not self.stdin.closed:
            stdin_pipe = self.stdin
            connection.input_sink = lambda data: stdin_pipe.write(data, connection)
            connection.input_end = stdin_pipe.close_when_drained if close_stdin else _ignore
        if self.output_ended:
            connection.finish()
            return
        self._attachers[connection] = streams
        connection.add_close_callback(self._forget_attacher)

    def read_output(self, pipe: OutputPipe) -> None:
        try:
            data = os.read(pipe.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            # A pty master reads EIO once every slave descriptor is closed: its end of file.
            if error.errno != errno.EIO or pipe.fd != self.console_fd:
                log.error("container %s: cannot read %s: %s", self.id, _stream_name(pipe), error)
            data = b""
        if data:
            self._deliver(pipe.stream, data)
        else:
            self._end_output(pipe)

    def process_exited(self, exit_code: int, time_ns: int) -> None:
        """Note the reaped init's exit; it is reported once the output is delivered."""
        self.exit_code = exit_code
        self._exit_time_ns = time_ns
        if self.stdin is not None:
            self.stdin.close()
        if not self.output_ended:
            self._timers.append(self._loop.call_later(DRAIN_TIMEOUT_SECONDS, self._force_drain))
        elif self.exit_trailer:
            self._end_attachers()
        self._finish_if_done()

    def close(self) -> None:
        """Release every descriptor and client without reporting anything."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        for pipe in list(self._outputs.values()):
            self._loop.unregister(pipe.fd)
            os.close(pipe.fd)
        self._outputs.clear()
        if self.stdin is not None:
            self.stdin.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for connection in list(self._attachers):
            connection.close()
        for connection in self.waiters + self.delete_requests:
            connection.close()

    def _deliver(self, stream: int, data: bytes) -> None:
        if self._log_file is not None:
            self._log_file.write(protocol.STREAM_NAMES[stream], data)
        frame = protocol.encode_frame(stream, data)
        for connection, streams in list(self._attachers.items()):
            if stream in streams and not connection.send(frame):
                self._drop_attacher(connection, "it fell too far behind")

    def _end_output(self, pipe: OutputPipe) -> None:
        self._loop.unregister(pipe.fd)
        os.close(pipe.fd)
        del self._outputs[pipe.stream]
        if self._log_file is not None:
            self._log_file.end_stream(protocol.STREAM_NAMES[pipe.stream])
        if self._outputs:
            return
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if not self.exit_trailer or self.exited:
            self._end_attachers()
        self._finish_if_done()

    def _end_attachers(self) -> None:
        """Send the attach clients their end of stream, after the exit frame if wanted."""
        if self.exit_trailer:
            payload = json.dumps({"exit_code": self.exit_code}).encode()
            for connection in list(self._attachers):
                connection.send(protocol.encode_frame(protocol.STREAM_EXIT, payload))
        for connection in list(self._attachers):
            connection.finish()
        if self._attachers:
            timer = self._loop.call_later(ATTACH_FLUSH_TIMEOUT_SECONDS, self._drop_slow_attachers)
            self._timers.append(timer)

    def _force_drain(self) -> None:
        """Read what the pipes hold now and close them, though writers may remain."""
        log.warning(
            "container %s: output still open %g s after its init exited; closing it",
            self.id,
            DRAIN_TIMEOUT_SECONDS,
        )
        for pipe in list(self._outputs.values()):
            # A leftover writer may keep writing, so the read stops after what a pipe can
            # buffer at most by default (1 MiB, /proc/sys/fs/pipe-max-size).
            budget = 1 << 20
            while budget > 0:
                try:
                    data = os.read(pipe.fd, READ_SIZE)
                except OSError:
                    break
                if not data:
                    break
                budget -= len(data)
                self._deliver(pipe.stream, data)
            if pipe.stream in self._outputs:
                self._end_output(pipe)

    def _drop_slow_attachers(self) -> None:
        for connection in list(self._attachers):
            self._drop_attacher(connection, "it did not read the end of the output in time")

    def _drop_attacher(self, connection: Connection, reason: str) -> None:
        log.warning("container %s: dropping attach %s: %s", self.id, connection.label, reason)
        connection.close()

    def _forget_attacher(self, connection: Connection) -> None:
        self._attachers.pop(connection, None)
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if self._closed or self.finished or not self.exited:
            return
        if self._outputs or self._attachers:
            return
        self.finished = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._on_finished(self)


def _stream_name(pipe: OutputPipe) -> str:
    return protocol.STREAM_NAMES[pipe.stream]


def _ignore() -> None:
    pass
