"""A stand-in for ``ketch.engine.Engine`` and a helper that serves it on a real unix socket.

The API server and the CLI are tested over real HTTP against ``FakeEngine``, which keeps
containers and images in dicts and "runs" a container by interpreting its Cmd as a tiny
script instead of starting a process. Commands are separated by ";":

- ``echo WORDS...``: WORDS on stdout; ``warn WORDS...``: WORDS on stderr;
- ``exit N``: stop with status N (0 when the script ends without one);
- ``sleep``: keep running until killed;
- any other first word: start fails with the runtime's "executable file not found" text.

``serve_fake_engine(path)`` runs the real ``ketch.api.server.serve`` on an event loop in a
background thread, so a test can drive it from blocking code or from a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketch.api.server import serve
from ketch.errors import Conflict, InvalidArgument, NotFound

STDOUT = 1
STDERR = 2


def frame(stream: int, data: bytes) -> bytes:
    """Encode one multiplexed frame: stream type, three zero bytes, big-endian length."""
    return struct.pack(">BxxxI", stream, len(data)) + data


@dataclass
class FakeContainer:
    id: str
    name: str
    image: str
    cmd: list[str]
    auto_remove: bool
    body: dict[str, Any]
    created: int = field(default_factory=lambda: int(time.time()))
    status: str = "created"
    exit_code: int = 0
    readers: list[asyncio.StreamReader] = field(default_factory=list)
    exit_waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)
    removal_waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)


class FakeEngine:
    """The Engine's API-facing methods over in-memory state, recording every call."""

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, Any]] = []
        # reference -> (progress messages, error raised after them or None)
        self.pull_results: dict[str, tuple[list[dict[str, Any]], Exception | None]] = {}
        self.pull_delay = 0.0
        # The ``auth`` argument of each pull_image call, in order.
        self.pull_auths: list[Any] = []

    # -- images ---------------------------------------------------------------------------

    def add_image(self, tag: str, size: int = 4_261_000, created: int | None = None) -> str:
        image_id = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
        self.images[tag] = {
            "Id": image_id,
            "RepoTags": [tag],
            "RepoDigests": [],
            "Created": created if created is not None else int(time.time()) - 3 * 86400,
            "Size": size,
            "ParentId": "",
            "Labels": {},
            "Containers": -1,
            "SharedSize": -1,
        }
        return image_id

    async def pull_image(
        self, reference: str, progress: Callable[[dict], None], auth: Any = None
    ) -> None:
        self.calls.append(("pull_image", reference))
        self.pull_auths.append(auth)
        messages, error = self.pull_results.get(reference, ([], NotFound("manifest unknown")))
        for message in messages:
            progress(message)
            await asyncio.sleep(self.pull_delay)
        if error is not None:
            raise error
        self.add_image(reference if ":" in reference else reference + ":latest")

    def list_images(self, shared_size: bool = False) -> list[dict[str, Any]]:
        return list(self.images.values())

    def inspect_image(self, name: str) -> dict[str, Any]:
        if name == "crash":
            raise RuntimeError("the fake engine crashed")
        for tag, image in self.images.items():
            if name in (tag, image["Id"]):
                return image
        raise NotFound(f"No such image: {name}")

    # -- system ---------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return {
            "Version": "0.1.0",
            "ApiVersion": "1.45",
            "MinAPIVersion": "1.24",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": "6.1.0",
            "Components": [],
        }

    def info(self) -> dict[str, Any]:
        return {
            "Containers": len(self.containers),
            "Images": len(self.images),
            "Driver": "overlay2",
        }

    # -- containers -----------------------------------------------------------------------

    def _find(self, reference: str) -> FakeContainer:
        reference = reference.lstrip("/")
        for container in self.containers.values():
            if container.id.startswith(reference) or container.name == reference:
                return container
        raise NotFound(f"No such container: {reference}")

    async def create_container(self, body: dict[str, Any], name: str | None) -> dict[str, Any]:
        self.calls.append(("create_container", (body, name)))
        image = body.get("Image") or ""
        tag = image if ":" in image else image + ":latest"
        if tag not in self.images:
            raise NotFound(f"No such image: {tag}")
        if name and any(c.name == name for c in self.containers.values()):
            raise Conflict(f'Conflict. The container name "/{name}" is already in use')
        container_id = hashlib.sha256(f"{time.time_ns()}{name}".encode()).hexdigest()
        container = FakeContainer(
            id=container_id,
            name=name or f"fake_{container_id[:6]}",
            image=image,
            cmd=list(body.get("Cmd") or []),
            auto_remove=bool((body.get("HostConfig") or {}).get("AutoRemove")),
            body=body,
        )
        self.containers[container_id] = container
        warnings = ["bridge networking is not implemented"] if image == "warn" else []
        return {"Id": container_id, "Warnings": warnings}

    async def start_container(self, reference: str) -> bool:
        container = self._find(reference)
        self.calls.append(("start_container", container.id))
        if container.status == "running":
            return False
        program = _parse_script(container.cmd)
        first = program[0][0] if program and program[0] else ""
        if first not in ("echo", "warn", "exit", "sleep", ""):
            # As dockerd does, a failed start ends the output streams of attached clients.
            for reader in container.readers:
                reader.feed_eof()
            container.readers.clear()
            raise NotFound(f'exec: "{first}": executable file not found in $PATH')
        container.status = "running"
        asyncio.get_running_loop().call_soon(self._run, container, program)
        return True

    def _run(self, container: FakeContainer, program: list[list[str]]) -> None:
        code = 0
        for command in program:
            if not command:
                continue
            word, arguments = command[0], command[1:]
            if word == "sleep":
                return
            if word == "exit":
                code = int(arguments[0])
                break
            stream = STDOUT if word == "echo" else STDERR
            self._broadcast(container, frame(stream, (" ".join(arguments) + "\n").encode()))
        self._finish(container, code)

    def _broadcast(self, container: FakeContainer, data: bytes) -> None:
        for reader in container.readers:
            reader.feed_data(data)

    def _finish(self, container: FakeContainer, code: int) -> None:
        for reader in container.readers:
            reader.feed_eof()
        container.readers.clear()
        container.status = "exited"
        container.exit_code = code
        result = {"StatusCode": code, "Error": None}
        for waiter in container.exit_waiters:
            if not waiter.done():
                waiter.set_result(result)
        container.exit_waiters.clear()
        if container.auto_remove:
            self._remove(container)

    def _remove(self, container: FakeContainer) -> None:
        self.containers.pop(container.id, None)
        for waiter in container.removal_waiters:
            if not waiter.done():
                waiter.set_result({"StatusCode": container.exit_code, "Error": None})

    def inspect_container(self, reference: str) -> dict[str, Any]:
        container = self._find(reference)
        return {
            "Id": container.id,
            "Name": "/" + container.name,
            "Image": container.image,
            "Config": {"Image": container.image, "Cmd": container.cmd},
            "State": {
                "Status": container.status,
                "Running": container.status == "running",
                "ExitCode": container.exit_code,
            },
        }

    def list_containers(
        self, all: bool = False, limit: int = -1, filters: dict | None = None
    ) -> list[dict[str, Any]]:
        self.calls.append(("list_containers", (all, limit, filters)))
        items = [
            {
                "Id": c.id,
                "Names": ["/" + c.name],
                "Image": c.image,
                "ImageID": "sha256:" + "0" * 64,
                "Command": " ".join(c.cmd),
                "Created": c.created,
                "State": c.status,
                "Status": "Up 3 seconds"
                if c.status == "running"
                else f"Exited ({c.exit_code}) 1 second ago",
                "Ports": [],
                "Labels": {},
            }
            for c in self.containers.values()
            if all or c.status == "running"
        ]
        return items if limit < 0 else items[:limit]

    async def remove_container(
        self, reference: str, force: bool = False, volumes: bool = False
    ) -> None:
        # The fake has no volumes, so ``volumes`` (rm -v) changes nothing.
        container = self._find(reference)
        self.calls.append(("remove_container", (container.id, force)))
        if container.status == "running":
            if not force:
                raise Conflict(f"You cannot remove a running container {container.id}")
            self._finish(container, 137)
        self._remove(container)

    async def kill_container(self, reference: str, signal: str | int = "SIGKILL") -> None:
        container = self._find(reference)
        self.calls.append(("kill_container", (container.id, signal)))
        if container.status != "running":
            raise Conflict(f"Container {container.id} is not running")
        self._finish(container, 137)

    async def stop_container(self, reference: str, timeout: int | None = None) -> bool:
        container = self._find(reference)
        self.calls.append(("stop_container", (container.id, timeout)))
        if container.status != "running":
            return False
        self._finish(container, 143)
        return True

    def wait_container(self, reference: str, condition: str = "not-running") -> asyncio.Future:
        container = self._find(reference)
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if condition == "not-running" and container.status == "exited":
            future.set_result({"StatusCode": container.exit_code, "Error": None})
        elif condition == "removed":
            container.removal_waiters.append(future)
        else:
            container.exit_waiters.append(future)
        return future

    async def attach_container(
        self, reference: str, stdout: bool = True, stderr: bool = True, stream: bool = True,
        logs: bool = False,
    ) -> asyncio.StreamReader:  # fmt: skip
        container = self._find(reference)
        reader = asyncio.StreamReader()
        if container.status == "exited":
            reader.feed_eof()
        else:
            container.readers.append(reader)
        return reader


def _parse_script(cmd: list[str]) -> list[list[str]]:
    program: list[list[str]] = [[]]
    for word in cmd:
        if word == ";":
            program.append([])
        else:
            program[-1].append(word)
    return program


@dataclass
class ServedEngine:
    engine: FakeEngine
    socket_path: Path
    loop: asyncio.AbstractEventLoop

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the server's loop thread and return its result."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            box.append(function())
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)
        return box[0]


@contextlib.contextmanager
def serve_fake_engine(
    socket_path: Path, engine: FakeEngine | None = None
) -> Iterator[ServedEngine]:
    """Serve the Engine API for a FakeEngine on ``socket_path`` from a background thread."""
    engine = engine or FakeEngine()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: list[asyncio.Future[None]] = []

    failures: list[BaseException] = []

    async def run_server() -> None:
        try:
            server = await serve(engine, socket_path)
        except Exception as error:
            failures.append(error)
            ready.set()
            return
        stop.append(loop.create_future())
        ready.set()
        try:
            await stop[0]
        finally:
            server.close()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(run_server(),), daemon=True)
    thread.start()
    try:
        if not ready.wait(5):
            raise RuntimeError(f"the fake engine's API server did not start on {socket_path}")
        if failures:
            raise failures[0]
        yield ServedEngine(engine, socket_path, loop)
    finally:
        if stop:
            loop.call_soon_threadsafe(stop[0].set_result, None)
        thread.join(10)
        loop.close()
