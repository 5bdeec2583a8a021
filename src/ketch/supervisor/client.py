"""The asyncio client of the supervisor, as ketchd uses it.

A walk-through, with ``exec_root`` the engine's exec root::

    await ensure_supervisor(exec_root)          # starts it detached unless it runs
    sup = SupervisorClient(exec_root)
    pid = await sup.create(cid, bundle, log_path)   # init parked, stdio pipes in place
    output = await sup.attach(cid)              # before start, so no output is missed
    await sup.start(cid)
    while frame := await output.read(65536): ...    # Engine API frames, EOF at the end
    status = await sup.wait(cid)                # {"exit_code": 0, "finished_at": "..."}
    await sup.delete(cid)

Each call opens its own connection, so a client holds no state between calls and a
restarted ketchd can make a new client at any time. The protocol and its message table are
in :mod:`ketch.supervisor.protocol`. A failed request raises the :mod:`ketch.errors` class
the supervisor named, and an unreachable supervisor raises Unavailable.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ketch.errors import InvalidArgument, SystemFailure, Unavailable
from ketch.supervisor import protocol

# Maximum length of a response line, far above a list of thousands of containers.
RESPONSE_LIMIT_BYTES = 16 << 20

# How long ensure_supervisor waits for a new supervisor to serve. Start-up imports the
# runtime and restores records, which takes well under a second on an idle machine.
START_TIMEOUT_SECONDS = 15.0


class AttachStream(asyncio.StreamReader):
    """The output of an attached container: Engine API frames, then EOF.

    It keeps the connection open while the caller reads. :meth:`close` detaches early.
    """

    writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class EventStream:
    """An open ``events`` subscription; iterate it for event objects until the supervisor
    closes the connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        line = await self._reader.readline()
        if not line:
            self.close()
            raise StopAsyncIteration
        return protocol.decode_message(line)

    def close(self) -> None:
        self._writer.close()


class SupervisorClient:
    """Talks to the supervisor serving ``<exec_root>/supervisor.sock``."""

    def __init__(self, exec_root: Path) -> None:
        self.exec_root = exec_root
        self.socket_path = exec_root / protocol.SOCKET_NAME

    async def ping(self) -> dict[str, Any]:
        """Return the supervisor's pid and protocol version."""
        return await self._request({"op": "ping"})

    async def create(
        self,
        container_id: str,
        bundle: Path,
        log_path: Path,
        *,
        open_stdin: bool = False,
        log_max_size: int = 0,
        log_max_files: int = 1,
        tty: bool = False,
    ) -> int:
        """Create the container and return its init's host pid; it waits for start.

        The log rotates past ``log_max_size`` bytes (0: never), keeping ``log_max_files``.
        """
        response = await self._request(
            {
                "op": "create",
                "id": container_id,
                "bundle": str(Path(bundle).absolute()),
                "log_path": str(Path(log_path).absolute()),
                "open_stdin": open_stdin,
                "log_max_size": log_max_size,
                "log_max_files": log_max_files,
                "tty": tty,
            }
        )
        return int(response["pid"])

    async def start(self, container_id: str) -> None:
        await self._request({"op": "start", "id": container_id})

    async def kill(self, container_id: str, signal: int) -> None:
        await self._request({"op": "kill", "id": container_id, "signal": int(signal)})

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the container (the freezer cgroup)."""
        await self._request({"op": "pause", "id": container_id})

    async def resume(self, container_id: str) -> None:
        await self._request({"op": "resume", "id": container_id})

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Write new cgroup limits; ``resources`` is an OCI linux.resources object."""
        await self._request({"op": "update", "id": container_id, "resources": resources})

    async def processes(self, container_id: str) -> list[int]:
        """Return the host pids of every process in the container's cgroup."""
        response = await self._request({"op": "processes", "id": container_id})
        return [int(pid) for pid in response["pids"]]

    async def delete(self, container_id: str, force: bool = False) -> None:
        """Delete the container's runtime state, cgroups and record; with ``force`` a
        running container is killed first. Returns once it is gone."""
        await self._request({"op": "delete", "id": container_id, "force": force})

    async def state(self, container_id: str) -> dict[str, Any]:
        """Return ``{"id", "status", "pid", "exit_code", "started_at", "finished_at"}``."""
        response = await self._request({"op": "state", "id": container_id})
        return response["container"]

    async def list(self) -> list[dict[str, Any]]:
        response = await self._request({"op": "list"})
        return response["containers"]

    async def wait(self, container_id: str) -> dict[str, Any]:
        """Return ``{"exit_code", "finished_at"}`` once the container has stopped."""
        response = await self._request({"op": "wait", "id": container_id})
        return {"exit_code": response["exit_code"], "finished_at": response["finished_at"]}

    async def attach(
        self, container_id: str, stdout: bool = True, stderr: bool = True
    ) -> AttachStream:
        """Return a reader of the container's output as Engine API frames until it ends."""
        reader, _ = await self.attach_with_stdin(container_id, stdout, stderr, stdin=False)
        return reader

    async def attach_with_stdin(
        self,
        container_id: str,
        stdout: bool = True,
        stderr: bool = True,
        *,
        stdin: bool = True,
        close_stdin: bool = True,
    ) -> tuple[AttachStream, asyncio.StreamWriter]:
        """Attach as :meth:`attach` does, and return a writer whose bytes go to the
        container's stdin; ``writer.write_eof()`` closes it unless ``close_stdin`` is
        false. The container must have been created with ``open_stdin``."""
        reader, writer = await self._connect(stream_class=AttachStream)
        request = {
            "op": "attach",
            "id": container_id,
            "stdout": stdout,
            "stderr": stderr,
            "stdin": stdin,
            "close_stdin": close_stdin,
        }
        try:
            await _exchange(reader, writer, request)
        except BaseException:
            writer.close()
            raise
        reader.writer = writer
        return reader, writer

    async def exec(
        self,
        container_id: str,
        exec_id: str,
        process: dict[str, Any],
        *,
        tty: bool = False,
        open_stdin: bool = False,
    ) -> tuple[AttachStream, asyncio.StreamWriter, int]:
        """Start ``process`` (an OCI process object) in a running container.

        Returns the exec's output as frames, ending with a ``STREAM_EXIT`` frame that
        carries the exit code, a writer for its stdin (with ``open_stdin``;
        ``write_eof()`` closes it), and its host pid.
        """
        reader, writer = await self._connect(stream_class=AttachStream)
        request = {
            "op": "exec",
            "id": container_id,
            "exec_id": exec_id,
            "process": process,
            "tty": tty,
            "open_stdin": open_stdin,
        }
        try:
            response = await _exchange(reader, writer, request)
        except BaseException:
            writer.close()
            raise
        reader.writer = writer
        return reader, writer, int(response["pid"])

    async def execs(self, container_id: str) -> list[dict[str, Any]]:
        """Return the state objects of the container's running and remembered execs:
        ``{"id", "exec_id", "pid", "status", "exit_code"}``."""
        response = await self._request({"op": "execs", "id": container_id})
        return response["execs"]

    async def resize(self, target_id: str, height: int, width: int) -> None:
        """Set the terminal size of a container or an exec that has a terminal."""
        await self._request({"op": "resize", "id": target_id, "height": height, "width": width})

    async def subscribe(self) -> EventStream:
        """Open an event subscription; events that happen after this returns are seen."""
        reader, writer = await self._connect()
        try:
            await _exchange(reader, writer, {"op": "events"})
        except BaseException:
            writer.close()
            raise
        return EventStream(reader, writer)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield ``{"type": "exit", "id", "exit_code", "finished_at"}`` objects as containers
        exit, until the supervisor closes the connection. Subscribing happens on the first
        iteration, so call :meth:`list` after it to catch up on anything earlier."""
        stream = await self.subscribe()
        try:
            async for event in stream:
                yield event
        finally:
            stream.close()

    async def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        reader, writer = await self._connect()
        try:
            return await _exchange(reader, writer, request)
        finally:
            writer.close()

    async def _connect(
        self, stream_class: type[asyncio.StreamReader] = asyncio.StreamReader
    ) -> tuple[Any, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = stream_class(limit=RESPONSE_LIMIT_BYTES)
        stream_protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.create_unix_connection(
                lambda: stream_protocol, str(self.socket_path)
            )
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise Unavailable(
                f"supervisor not reachable at {self.socket_path}: {error.strerror}"
            ) from None
        except OSError as error:
            if error.errno is None:
                # Python raises "AF_UNIX path too long" without an errno.
                raise InvalidArgument(
                    f"invalid exec root {self.exec_root}: socket path {self.socket_path}: {error}"
                ) from None
            raise Unavailable(f"supervisor not reachable at {self.socket_path}: {error}") from None
        writer = asyncio.StreamWriter(transport, stream_protocol, reader, loop)
        return reader, writer


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: dict[str, Any]
) -> dict[str, Any]:
    """Send one request and return its successful response."""
    writer.write(protocol.encode_message(request))
    try:
        await writer.drain()
        line = await reader.readline()
    except ConnectionError as error:
        raise Unavailable(f"supervisor connection failed during {request['op']}: {error}") from None
    except ValueError as error:
        raise SystemFailure(
            f"supervisor response to {request['op']} is too long: {error}"
        ) from None
    if not line.endswith(b"\n"):
        raise Unavailable(f"supervisor closed the connection before answering {request['op']}")
    return protocol.check_response(protocol.decode_message(line))


async def ensure_supervisor(exec_root: Path, *, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Start the supervisor for ``exec_root`` unless one responds to ping there already.

    The supervisor runs detached (a new session, stdio to ``<exec_root>/supervisor.log``,
    its pid in ``<exec_root>/supervisor.pid``), so it outlives the caller.
    """
    exec_root = Path(exec_root).absolute()
    client = SupervisorClient(exec_root)
    if await _answers(client):
        return
    exec_root.mkdir(mode=0o711, parents=True, exist_ok=True)
    log_path = exec_root / "supervisor.log"
    command = [sys.executable, "-m", "ketch.supervisor", "--exec-root", str(exec_root), "--detach"]
    with open(log_path, "ab") as log_file:
        launcher = await asyncio.create_subprocess_exec(
            *command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        status = await asyncio.wait_for(launcher.wait(), timeout)
    except TimeoutError:
        launcher.send_signal(signal.SIGKILL)
        await launcher.wait()
        raise Unavailable(
            f"supervisor for {exec_root} did not start within {timeout:.0f} s; see {log_path}"
        ) from None
    # A launcher that lost the race to another one exits 1, but the winner keeps the pid
    # file locked and serves shortly.
    while True:
        if await _answers(client):
            return
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0 or not _pid_file_locked(exec_root / "supervisor.pid"):
            break
        await asyncio.sleep(min(0.05, remaining))
    raise Unavailable(
        f"supervisor for {exec_root} did not start (launcher exit status {status}): "
        f"{_last_line(log_path)} (see {log_path})"
    )


async def _answers(client: SupervisorClient) -> bool:
    try:
        await client.ping()
    except Unavailable:
        return False
    return True


def _pid_file_locked(path: Path) -> bool:
    """Tell whether a running supervisor holds the lock on its pid file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"
