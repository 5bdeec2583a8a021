"""The routes whose replies stream: attach, logs, wait and image pull and push.

- attach: the engine returns a reader of Docker's multiplexed frames. The connection is
  hijacked (``101 UPGRADED`` when the client sent ``Upgrade: tcp``), and the frames are
  copied to it until the container's output ends. Then the socket is closed.
- logs: the engine resolves the container first, so an unknown one is a plain 404. Then
  the ``200`` headers go out, and the log follows as a chunked body of frames (raw bytes
  for a TTY container) until the log ends or, with ``follow``, the container stops.
- wait: the engine registers the waiter first, then the ``200`` headers go out at once, so
  a client that waits before it starts the container knows the waiter is in place; the
  JSON body follows when the condition is met.
- image pull and push: progress messages go out as JSON lines in a chunked body. The
  headers wait for the first message, so an error before any progress (an invalid
  reference, a manifest that does not exist) is still a plain HTTP error. An error after
  it is the last line, ``{"errorDetail": {"message": m}, "error": m}``, as dockerd writes it.

All three watch the client's side of the socket: when the client goes away, the engine
call is cancelled, or the attach ended, instead of running on for nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ketch.api.connection import HttpConnection
from ketch.api.errors import message_for_error
from ketch.engine.attach import STREAM_TYPES, frame
from ketch.errors import InvalidArgument, KetchError
from ketch.images.auth import credentials_from_registry_auth

if TYPE_CHECKING:
    from ketch.api.routes import Call

log = logging.getLogger(__name__)

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
STAT_HEADER = "X-Docker-Container-Path-Stat"
COPY_SIZE = 65536
HANGUP_POLL_SECONDS = 1.0
# Docker's stream formatter ends each JSON message with CRLF; clients split on "\n".
LINE_END = b"\r\n"

T = TypeVar("T")
ProgressCallback = Callable[[dict[str, Any]], None]


async def attach_container(call: Call) -> None:
    # Only an attach with stdin passes it, so engines without the parameter still work.
    extra = {"stdin": True} if call.flag("stdin") else {}
    reader = await call.engine.attach_container(
        call.parameters["id"],
        stdout=call.flag("stdout"),
        stderr=call.flag("stderr"),
        stream=call.flag("stream"),
        logs=call.flag("logs"),
        **extra,
    )
    writer = await call.http.hijack(call.request.wants_upgrade, RAW_STREAM)
    stdin = getattr(reader, "stdin", None)
    if stdin is not None:
        keys = parse_detach_keys(call.request.query.get("detachKeys", ""))
        await _run_hijacked(call, _read_chunks(reader), stdin, writer, keys)
        return
    copy = asyncio.ensure_future(_copy_stream(reader, writer))
    hangup = asyncio.ensure_future(_wait_for_hangup(call.http))
    try:
        await asyncio.wait({copy, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        copy.cancel()
    if copy.done() and not copy.cancelled():
        copy.result()
    else:
        log.debug("attach to %s ended: the client closed the connection", call.parameters["id"])


async def _read_chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    try:
        while chunk := await reader.read(COPY_SIZE):
            yield chunk
    finally:
        detach = getattr(reader, "detach", None)
        if detach is not None:
            detach()


async def _copy_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        chunk = await reader.read(COPY_SIZE)
        if not chunk:
            return
        writer.write(chunk)
        await writer.drain()


async def _wait_for_hangup(http: HttpConnection) -> None:
    """Return once the client has closed the attach socket completely.

    A quiet container writes nothing for a write error to reveal a client that left, so
    the socket is checked every HANGUP_POLL_SECONDS after the client's end of file.
    """
    await http.wait_until_client_closes()
    while not http.peer_hung_up():
        await asyncio.sleep(HANGUP_POLL_SECONDS)


async def container_logs(call: Call) -> None:
    # The logs and archive routes import their engine modules at their first request, so
    # that ketchd's start leaves them out of memory.
    from ketch.engine.logs import LogQuery, parse_tail

    query = LogQuery(
        stdout=call.flag("stdout"),
        stderr=call.flag("stderr"),
        since_ns=_unix_time(call, "since"),
        until_ns=_unix_time(call, "until"),
        tail=parse_tail(call.request.query.get("tail", "")),
        timestamps=call.flag("timestamps"),
        follow=call.flag("follow"),
    )
    if not query.stdout and not query.stderr:
        raise InvalidArgument("Bad parameters: you must choose at least one stream")
    raw, output = call.engine.container_logs(call.parameters["id"], query)
    await call.http.start_stream(200, RAW_STREAM if raw else MULTIPLEXED_STREAM)
    await _send_until_client_closes(call, output, lambda data: data)


def _unix_time(call: Call, name: str) -> int:
    from ketch.engine.logs import parse_unix_time

    text = call.request.query.get(name, "").strip()
    return parse_unix_time(text, name) if text else 0


async def events(call: Call) -> None:
    from ketch.api.routes import parse_filters

    filters = parse_filters(call.request.query.get("filters", ""))
    subscription = call.engine.subscribe_events(
        filters, since_ns=_unix_time(call, "since"), until_ns=_unix_time(call, "until")
    )
    await call.http.start_stream(200)
    await _send_until_client_closes(
        call, subscription, lambda event: json.dumps(event).encode() + b"\n"
    )


async def _send_until_client_closes(
    call: Call, source: AsyncIterator[Any], encode: Callable[[Any], bytes]
) -> None:
    """Send each item of ``source`` as a chunk until it ends or the client goes away."""
    closed = asyncio.ensure_future(call.http.wait_until_client_closes())
    try:
        while True:
            piece = asyncio.ensure_future(anext(source, None))
            await asyncio.wait({piece, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not piece.done():
                piece.cancel()
                await asyncio.gather(piece, return_exceptions=True)
                log.debug("%s ended: the client went away", call.request.target)
                call.http.must_close = True
                return
            item = piece.result()
            if item is None:
                break
            await call.http.send_chunk(encode(item))
    finally:
        await _cancel_watch(closed)
        await source.aclose()  # type: ignore[attr-defined]
    await call.http.end_stream()


async def start_exec(call: Call) -> None:
    body = call.request.json_body() or {}
    if not isinstance(body, dict):
        raise InvalidArgument("invalid exec start body: expected a JSON object")
    detach = bool(body.get("Detach"))
    tty = body.get("Tty") if isinstance(body.get("Tty"), bool) else None
    exec_id = call.parameters["id"]
    if detach:
        await call.engine.start_exec(exec_id, detach=True, tty=tty)
        await call.http.send(200, b"")
        return
    # The reply's headers go out before the process starts, as with dockerd: a client
    # that reads them through a buffered reader (docker-py) would lose output that came
    # in the same read.
    call.engine.check_exec_start(exec_id)
    inspected = call.engine.inspect_exec(exec_id)
    raw = bool(tty) or bool(inspected["ProcessConfig"]["tty"])
    writer = await call.http.hijack(
        call.request.wants_upgrade, RAW_STREAM if raw else MULTIPLEXED_STREAM
    )
    try:
        session = await call.engine.start_exec(exec_id, detach=False, tty=tty)
    except KetchError as error:
        # The status line is gone, so the error goes into the stream as dockerd writes it:
        # one line on stdout, in a frame unless the stream is raw. The exec has its exit
        # code by now (126 or 127), which clients read from the exec inspect that follows.
        await _send_stream_error(writer, message_for_error(error), raw)
        return
    keys = parse_detach_keys(session.detach_keys)
    await _run_hijacked(call, session.output, session.stdin, writer, keys)


async def _send_stream_error(writer: asyncio.StreamWriter, message: str, raw: bool) -> None:
    line = message.encode() + b"\r\n"
    if not raw:
        line = frame(STREAM_TYPES["stdout"], line)
    writer.write(line)
    await writer.drain()


def parse_detach_keys(text: str) -> bytes:
    """Parse a detach key sequence such as ``ctrl-p,ctrl-q`` (the default) into bytes."""
    sequence = bytearray()
    for key in (text or DEFAULT_DETACH_KEYS).split(","):
        if len(key) == 1:
            sequence += key.encode()
        elif key.lower().startswith("ctrl-") and len(key) == 6:
            code = ord(key[5].lower())
            if ord("a") <= code <= ord("z"):
                sequence.append(code - ord("a") + 1)
            elif key[5] in "@[\\]^_":
                sequence.append(ord(key[5]) - 64)
            else:
                raise InvalidArgument(f"invalid detach keys {text!r}: unknown key {key!r}")
        else:
            raise InvalidArgument(
                f"invalid detach keys {text!r}: expected keys such as ctrl-p,ctrl-q or a,b"
            )
    return bytes(sequence)


class DetachScanner:
    """Finds the detach key sequence in the client's input, across reads."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.matched = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Return the bytes to pass on and whether the sequence is complete."""
        if not self.matched and self.keys[0] not in data:
            return data, False
        out = bytearray()
        for byte in data:
            if byte == self.keys[self.matched]:
                self.matched += 1
                if self.matched == len(self.keys):
                    return bytes(out), True
                continue
            # A partial match that breaks off was input after all.
            out += self.keys[: self.matched]
            self.matched = 1 if byte == self.keys[0] else 0
            if not self.matched:
                out.append(byte)
        return bytes(out), False


async def _run_hijacked(
    call: Call,
    output: AsyncIterator[bytes],
    stdin: Any,
    writer: asyncio.StreamWriter,
    detach_keys: bytes = b"",
) -> None:
    """Copy ``output`` to the client and the client's bytes to ``stdin``.

    This ends when the output ends or the client types the detach keys. Without
    ``stdin`` it also ends when the client hangs up.
    """
    copy = asyncio.ensure_future(_copy_output(output, writer))
    if stdin is not None:
        watch = asyncio.ensure_future(_copy_input(call.http, stdin, detach_keys))
    else:
        watch = asyncio.ensure_future(_wait_for_hangup(call.http))
    try:
        await asyncio.wait({copy, watch}, return_when=asyncio.FIRST_COMPLETED)
        if stdin is not None and watch.done() and not watch.result():
            # Stdin ended but the output goes on until the process ends.
            await asyncio.wait({copy})
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        if not copy.done():
            copy.cancel()
        await asyncio.gather(copy, return_exceptions=True)
    if copy.cancelled() or copy.exception() is not None:
        log.debug("stream of %s ended early", call.request.target)


async def _copy_output(output: AsyncIterator[bytes], writer: asyncio.StreamWriter) -> None:
    try:
        async for data in output:
            writer.write(data)
            await writer.drain()
    finally:
        await output.aclose()  # type: ignore[attr-defined]


async def _copy_input(http: HttpConnection, stdin: Any, detach_keys: bytes) -> bool:
    """Copy the client's bytes to the process's stdin and close it at the client's EOF.

    Returns True when the client typed the detach keys: then stdin stays open.
    """
    scanner = DetachScanner(detach_keys) if detach_keys else None
    try:
        data = http.take_buffered_input()
        while True:
            detached = False
            if scanner is not None and data:
                data, detached = scanner.feed(data)
            if data:
                stdin.write(data)
                await stdin.drain()
            if detached:
                log.debug("client detached with its detach keys")
                return True
            data = await http.reader.read(COPY_SIZE)
            if not data:
                break
        if stdin.can_write_eof():
            stdin.write_eof()
    except (ConnectionError, OSError) as error:
        log.debug("stdin copy ended: %s", error)
    return False


async def container_stats(call: Call) -> None:
    stream = call.flag("stream") if "stream" in call.request.query else True
    samples = call.engine.container_stats(
        call.parameters["id"], stream=stream, one_shot=call.flag("one-shot")
    )
    await call.http.start_stream(200)
    await _send_until_client_closes(
        call, samples, lambda sample: json.dumps(sample).encode() + b"\n"
    )


async def archive_get(call: Call) -> None:
    from ketch.engine import archive

    path = _archive_path(call)
    stat_object, spool = await call.engine.archive_get(call.parameters["id"], path)
    with spool:
        await call.http.start_stream(
            200, "application/x-tar", ((STAT_HEADER, archive.stat_header(stat_object)),)
        )
        while chunk := spool.read(COPY_SIZE):
            await call.http.send_chunk(chunk)
    await call.http.end_stream()


async def archive_head(call: Call) -> None:
    from ketch.engine import archive

    path = _archive_path(call)
    stat_object = await call.engine.archive_stat(call.parameters["id"], path)
    header = ((STAT_HEADER, archive.stat_header(stat_object)),)
    await call.http.send(200, b"", extra_headers=header)


async def archive_put(call: Call) -> None:
    path = _archive_path(call)
    keep_owners = call.flag("copyUIDGID")
    await call.engine.archive_put(
        call.parameters["id"], path, call.request.body_stream(), keep_owners
    )
    await call.http.send(200, b"")


async def export_container(call: Call) -> None:
    spool = await call.engine.export_container(call.parameters["id"])
    with spool:
        await call.http.start_stream(200, "application/x-tar")
        while chunk := spool.read(COPY_SIZE):
            await call.http.send_chunk(chunk)
    await call.http.end_stream()


def _archive_path(call: Call) -> str:
    path = call.request.query.get("path", "")
    if not path:
        raise InvalidArgument("missing 'path' parameter: the path in the container")
    return path


async def wait_container(call: Call) -> None:
    condition = call.request.query.get("condition") or "not-running"
    waiter = asyncio.ensure_future(
        call.engine.wait_container(call.parameters["id"], condition=condition)
    )
    try:
        await call.http.start_stream(200)
        finished = await _finish_unless_client_closes(call.http, waiter)
    finally:
        if not waiter.done():
            waiter.cancel()
    if not finished:
        log.debug("wait for %s cancelled: the client closed the connection", call.parameters["id"])
        call.http.must_close = True
        return
    try:
        result = waiter.result()
    except Exception as error:
        log.warning("waiting for container %s failed: %s", call.parameters["id"], error)
        result = {"StatusCode": -1, "Error": {"Message": message_for_error(error)}}
    await call.http.send_chunk(json.dumps(result).encode() + b"\n")
    await call.http.end_stream()


async def pull_image(call: Call) -> None:
    """Pull an image, with the credentials of the X-Registry-Auth header when it has them.

    An empty header or ``{}`` carries no credentials, so the engine uses the ones stored
    for the registry. A header that is not base64url-encoded JSON is rejected with 400, as
    on the push route, although dockerd ignores such a header here and pulls anonymously.
    """
    reference = image_reference(call.request.query)
    auth = credentials_from_registry_auth(call.request.headers.get("x-registry-auth", ""))

    def start(progress: ProgressCallback) -> Awaitable[Any]:
        return call.engine.pull_image(reference, progress, auth=auth)

    await stream_progress_of(call, start, f"pull of {reference}")


async def stream_progress_of(
    call: Call, start: Callable[[ProgressCallback], Awaitable[Any]], description: str
) -> None:
    """Run ``start(progress)`` and send each progress message as a JSON line.

    ``description`` names the operation in log lines ("push of busybox").
    """
    messages: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    def on_progress(message: dict[str, Any]) -> None:
        messages.append(message)
        arrived.set()

    operation = asyncio.ensure_future(start(on_progress))
    try:
        await _stream_progress(call.http, operation, messages, arrived)
    finally:
        if not operation.done():
            operation.cancel()
    if call.http.must_close:
        log.info("%s cancelled: the client closed the connection", description)
        return

    error = operation.exception()
    if error is None:
        if not call.http.response_started:
            await call.http.start_stream(200)
    elif not call.http.response_started:
        raise error
    else:
        log.warning("%s failed: %s", description, error)
        message = message_for_error(error)
        line = {"errorDetail": {"message": message}, "error": message}
        await call.http.send_chunk(json.dumps(line).encode() + LINE_END)
    await call.http.end_stream()


async def _stream_progress(
    http: HttpConnection,
    pull: asyncio.Future[Any],
    messages: list[dict[str, Any]],
    arrived: asyncio.Event,
) -> None:
    """Send progress messages as they arrive until the pull ends or the client leaves."""
    closed = asyncio.ensure_future(http.wait_until_client_closes())
    try:
        while True:
            arrival = asyncio.ensure_future(arrived.wait())
            await asyncio.wait({pull, arrival, closed}, return_when=asyncio.FIRST_COMPLETED)
            arrival.cancel()
            arrived.clear()
            batch = messages[:]
            messages.clear()
            await _send_messages(http, batch)
            if pull.done():
                return
            if closed.done():
                http.must_close = True
                return
    finally:
        await _cancel_watch(closed)


async def _send_messages(http: HttpConnection, batch: list[dict[str, Any]]) -> None:
    if not batch:
        return
    if not http.response_started:
        await http.start_stream(200)
    await http.send_chunk(b"".join(json.dumps(message).encode() + LINE_END for message in batch))


async def _finish_unless_client_closes(http: HttpConnection, task: Awaitable[T]) -> bool:
    """Wait for ``task`` or for the client to close; return whether the task finished."""
    future = asyncio.ensure_future(task)
    closed = asyncio.ensure_future(http.wait_until_client_closes())
    try:
        await asyncio.wait({future, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel_watch(closed)
    return future.done()


async def _cancel_watch(watch: asyncio.Future[None]) -> None:
    """Cancel a ``wait_until_client_closes`` task and wait until it has stopped reading.

    The stream reader allows one reader at a time, and a cancelled task only lets go of it
    when it next runs; reading the next request before then raises RuntimeError.
    """
    watch.cancel()
    try:
        await watch
    except asyncio.CancelledError:
        pass


def image_reference(query: dict[str, str]) -> str:
    """Build the reference to pull from ``fromImage`` and ``tag``.

    ``tag`` replaces a tag already in ``fromImage``, and a ``tag`` that contains a colon
    is a digest (``sha256:...``), as in dockerd.
    """
    if query.get("fromSrc"):
        raise InvalidArgument("importing an image (the 'fromSrc' parameter) is not supported")
    image = query.get("fromImage", "").strip()
    if not image:
        raise InvalidArgument("missing 'fromImage' parameter: the name of the image to pull")
    tag = query.get("tag", "").strip()
    if not tag:
        # Limitation: without a tag dockerd pulls every tag of the repository; the image
        # store pulls "latest" only.
        return image
    name = image.split("@", 1)[0]
    last_component = name.rsplit("/", 1)[-1]
    if ":" in last_component:
        name = name.rsplit(":", 1)[0]
    separator = "@" if ":" in tag else ":"
    return f"{name}{separator}{tag}"
