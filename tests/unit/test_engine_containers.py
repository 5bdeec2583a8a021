"""Container lifecycle in the Engine, with in-memory fakes for the image store and the
supervisor (the integration tests run the real ones)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ketch.engine import Engine
from ketch.engine.attach import frame
from ketch.engine.containers import BRIDGE_WARNING
from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.network.firewall import Firewall

PASSWD = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"


@dataclass
class FakeImage:
    id: str = "sha256:" + "a" * 64
    repo_tags: list[str] = field(default_factory=lambda: ["busybox:latest"])
    repo_digests: list[str] = field(default_factory=list)
    created: str = "2026-01-02T03:04:05Z"
    size: int = 1234
    config: dict[str, Any] = field(
        default_factory=lambda: {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"l": "v"}}
    )
    architecture: str = "amd64"
    os: str = "linux"
    diff_ids: list[str] = field(default_factory=lambda: ["sha256:" + "b" * 64])


class FakeImages:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.image = FakeImage()
        self.prepared: set[str] = set()

    def get(self, name: str) -> FakeImage:
        if name in ("busybox", "busybox:latest", self.image.id):
            return self.image
        raise NotFound(f"No such image: {name}")

    def list(self) -> list[FakeImage]:
        return [self.image]

    async def pull(self, reference: str, progress: Callable[[dict], None] | None = None) -> None:
        self.get(reference)

    def prepare_rootfs(self, container_id: str, image: FakeImage) -> Path:
        merged = self.root / container_id / "merged"
        (merged / "etc").mkdir(parents=True)
        (merged / "etc" / "passwd").write_text(PASSWD)
        (merged / "etc" / "group").write_text("root:x:0:\n")
        self.prepared.add(container_id)
        return merged

    def release_rootfs(self, container_id: str) -> None:
        shutil.rmtree(self.root / container_id, ignore_errors=True)
        self.prepared.discard(container_id)


class FakeEvents:
    def __init__(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self.queue = queue

    def __aiter__(self) -> FakeEvents:
        return self

    async def __anext__(self) -> dict[str, Any]:
        event = await self.queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        pass


class FakeSupervisor:
    """Containers as dicts; ``exit`` ends one the way the real supervisor reports it."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.readers: dict[str, list[asyncio.StreamReader]] = {}
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.create_error: Exception | None = None
        self.ignored_signals: set[int] = set()
        self.signals: list[int] = []

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
        if self.create_error is not None:
            raise self.create_error
        assert (bundle / "config.json").is_file()
        self.containers[container_id] = {
            "id": container_id,
            "status": "created",
            "pid": 4242,
            "exit_code": None,
            "started_at": None,
            "finished_at": None,
        }
        return 4242

    async def start(self, container_id: str) -> None:
        self.containers[container_id]["status"] = "running"

    async def kill(self, container_id: str, signal_number: int) -> None:
        state = self.containers.get(container_id)
        if state is None or state["status"] != "running":
            raise Conflict(f"container {container_id} is not running")
        self.signals.append(signal_number)
        if signal_number not in self.ignored_signals:
            self.exit(container_id, 128 + signal_number)

    async def delete(self, container_id: str, force: bool = False) -> None:
        if container_id not in self.containers:
            raise NotFound(f"container {container_id} does not exist")
        del self.containers[container_id]

    async def list(self) -> list[dict[str, Any]]:
        return list(self.containers.values())

    async def attach(
        self, container_id: str, stdout: bool = True, stderr: bool = True
    ) -> asyncio.StreamReader:
        if container_id not in self.containers:
            raise NotFound(f"container {container_id} does not exist")
        reader = asyncio.StreamReader()
        self.readers.setdefault(container_id, []).append(reader)
        return reader

    async def subscribe(self) -> FakeEvents:
        return FakeEvents(self.events)

    def output(self, container_id: str, data: bytes) -> None:
        for reader in self.readers.get(container_id, []):
            reader.feed_data(frame(1, data))

    def exit(self, container_id: str, code: int) -> None:
        for reader in self.readers.pop(container_id, []):
            reader.feed_eof()
        state = self.containers[container_id]
        state.update(status="stopped", exit_code=code, finished_at="2026-01-02T03:04:06Z")
        self.events.put_nowait(
            {
                "type": "exit",
                "id": container_id,
                "exit_code": code,
                "finished_at": "2026-01-02T03:04:06Z",
            }
        )


@dataclass
class Setup:
    engine: Engine
    supervisor: FakeSupervisor
    images: FakeImages
    data_root: Path


@asynccontextmanager
async def engine_setup(tmp_path: Path) -> AsyncIterator[Setup]:
    supervisor = FakeSupervisor()
    images = FakeImages(tmp_path / "images")
    db = sqlite3.connect(":memory:", isolation_level=None)
    engine = Engine(data_root=tmp_path / "data", db=db, images=images, supervisor=supervisor)
    await engine.start()
    try:
        yield Setup(engine, supervisor, images, tmp_path / "data")
    finally:
        await engine.close()
        db.close()


def run(tmp_path: Path, test: Callable[[Setup], Awaitable[None]]) -> None:
    async def main() -> None:
        async with engine_setup(tmp_path) as setup:
            await asyncio.wait_for(test(setup), 10)

    asyncio.run(main())


async def settle() -> None:
    """Let background tasks (exit handling, auto-removal) run."""
    for _ in range(20):
        await asyncio.sleep(0)


def body(**fields: Any) -> dict[str, Any]:
    return {"Image": "busybox", "Cmd": ["echo", "hi"], **fields}


def test_create_returns_id_and_bridge_warning(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        created = await setup.engine.create_container(body(), None)
        assert len(created["Id"]) == 64
        assert created["Warnings"] == [BRIDGE_WARNING]

    run(tmp_path, test)


def test_create_network_none_no_warning(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        created = await setup.engine.create_container(
            body(HostConfig={"NetworkMode": "none"}), None
        )
        assert created["Warnings"] == []

    run(tmp_path, test)


def test_create_writes_bundle(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), "web"))["Id"]
        bundle = setup.data_root / "containers" / container_id / "bundle" / "config.json"
        spec = json.loads(bundle.read_text())
        assert spec["root"]["path"] == str(setup.images.root / container_id / "merged")
        assert spec["process"]["args"] == ["echo", "hi"]
        assert spec["hostname"] == container_id[:12]

    run(tmp_path, test)


def test_create_generates_name(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        name = setup.engine.inspect_container(container_id)["Name"]
        assert name.startswith("/")
        assert "_" in name

    run(tmp_path, test)


def test_create_name_conflict(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        first = (await setup.engine.create_container(body(), "web"))["Id"]
        expected = (
            f'Conflict. The container name "/web" is already in use by container "{first}". '
            "You have to remove (or rename) that container to be able to reuse that name."
        )
        with pytest.raises(Conflict) as raised:
            await setup.engine.create_container(body(), "/web")
        assert str(raised.value) == expected

    run(tmp_path, test)


def test_create_invalid_name(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        with pytest.raises(InvalidArgument, match=r"Invalid container name \(-x\)"):
            await setup.engine.create_container(body(), "-x")

    run(tmp_path, test)


def test_create_unknown_image(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        with pytest.raises(NotFound, match="No such image: nope:latest"):
            await setup.engine.create_container(body(Image="nope:latest"), None)

    run(tmp_path, test)


def test_create_failure_leaves_nothing(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        with pytest.raises(InvalidArgument, match="unable to find user bob"):
            await setup.engine.create_container(body(User="bob"), "failing")
        assert setup.engine.list_containers(all=True) == []
        assert setup.images.prepared == set()
        assert list((setup.data_root / "containers").iterdir()) == []

    run(tmp_path, test)


def test_create_failure_frees_name(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        with pytest.raises(InvalidArgument):
            await setup.engine.create_container(body(User="bob"), "again")
        created = await setup.engine.create_container(body(), "again")
        assert len(created["Id"]) == 64

    run(tmp_path, test)


def test_start_then_exit_recorded(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), "cc"))["Id"]
        waiter = setup.engine.wait_container(container_id, "next-exit")
        await setup.engine.start_container(container_id)
        assert setup.engine.inspect_container("cc")["State"]["Status"] == "running"
        setup.supervisor.exit(container_id, 3)
        assert await waiter == {"StatusCode": 3, "Error": None}
        state = setup.engine.inspect_container("cc")["State"]
        assert state["Status"] == "exited"
        assert state["ExitCode"] == 3
        assert state["FinishedAt"] == "2026-01-02T03:04:06Z"

    run(tmp_path, test)


def test_start_running_returns_false(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        assert await setup.engine.start_container(container_id) is True
        assert await setup.engine.start_container(container_id) is False

    run(tmp_path, test)


def test_auto_remove_after_exit(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        created = await setup.engine.create_container(body(HostConfig={"AutoRemove": True}), "aa")
        container_id = created["Id"]
        removed = setup.engine.wait_container(container_id, "removed")
        await setup.engine.start_container(container_id)
        setup.supervisor.exit(container_id, 7)
        assert await removed == {"StatusCode": 7, "Error": None}
        with pytest.raises(NotFound, match="No such container: aa"):
            setup.engine.inspect_container("aa")
        assert not (setup.data_root / "containers" / container_id).exists()
        assert setup.images.prepared == set()
        assert container_id not in setup.supervisor.containers

    run(tmp_path, test)


def test_start_failure_keeps_created_with_error(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), "ff"))["Id"]
        message = 'exec: "nope": executable file not found in $PATH'
        setup.supervisor.create_error = NotFound(message)
        with pytest.raises(InvalidArgument, match="executable file not found"):
            await setup.engine.start_container(container_id)
        state = setup.engine.inspect_container(container_id)["State"]
        assert state["Status"] == "created"
        assert state["Error"] == message
        assert state["ExitCode"] == 127

    run(tmp_path, test)


def test_start_failure_auto_removes(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        created = await setup.engine.create_container(body(HostConfig={"AutoRemove": True}), None)
        removed = setup.engine.wait_container(created["Id"], "removed")
        setup.supervisor.create_error = NotFound('exec: "x": executable file not found in $PATH')
        with pytest.raises(InvalidArgument):
            await setup.engine.start_container(created["Id"])
        result = await removed
        assert result["StatusCode"] == 127
        assert "executable file not found" in result["Error"]["Message"]

    run(tmp_path, test)


def test_wait_not_running_on_created_resolves_now(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        assert await setup.engine.wait_container(container_id) == {"StatusCode": 0, "Error": None}

    run(tmp_path, test)


def test_wait_invalid_condition(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        with pytest.raises(InvalidArgument, match="invalid condition"):
            setup.engine.wait_container(container_id, "whenever")

    run(tmp_path, test)


def test_wait_unknown_container(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        with pytest.raises(NotFound, match="No such container: ghost"):
            setup.engine.wait_container("ghost", "removed")

    run(tmp_path, test)


def test_remove_running_needs_force(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        await setup.engine.start_container(container_id)
        with pytest.raises(Conflict, match="You cannot remove a running container"):
            await setup.engine.remove_container(container_id)

    run(tmp_path, test)


def test_remove_force_kills_and_removes(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), "rr"))["Id"]
        await setup.engine.start_container(container_id)
        await setup.engine.remove_container("rr", force=True)
        assert setup.supervisor.signals == [signal.SIGKILL]
        assert setup.engine.list_containers(all=True) == []

    run(tmp_path, test)


def test_remove_created_container(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        await setup.engine.remove_container(container_id)
        assert setup.images.prepared == set()

    run(tmp_path, test)


def test_kill_not_running(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), "kk"))["Id"]
        with pytest.raises(Conflict, match=f"Container {container_id} is not running"):
            await setup.engine.kill_container("kk")

    run(tmp_path, test)


def test_kill_with_signal_name(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        await setup.engine.start_container(container_id)
        await setup.engine.kill_container(container_id, "HUP")
        assert setup.supervisor.signals == [signal.SIGHUP]

    run(tmp_path, test)


def test_kill_sigkill_waits_for_exit(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        await setup.engine.start_container(container_id)
        await setup.engine.kill_container(container_id)
        assert setup.engine.inspect_container(container_id)["State"]["ExitCode"] == 137

    run(tmp_path, test)


def test_stop_uses_stop_signal(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        created = await setup.engine.create_container(body(StopSignal="SIGUSR1"), None)
        await setup.engine.start_container(created["Id"])
        assert await setup.engine.stop_container(created["Id"]) is True
        assert setup.supervisor.signals == [signal.SIGUSR1]

    run(tmp_path, test)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        await setup.engine.start_container(container_id)
        setup.supervisor.ignored_signals.add(signal.SIGTERM)
        await setup.engine.stop_container(container_id, timeout=0)
        assert setup.supervisor.signals == [signal.SIGTERM, signal.SIGKILL]
        assert setup.engine.inspect_container(container_id)["State"]["ExitCode"] == 137

    run(tmp_path, test)


def test_stop_not_running_returns_false(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        assert await setup.engine.stop_container(container_id) is False

    run(tmp_path, test)


def test_attach_before_start_gets_output(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        reader = await setup.engine.attach_container(container_id)
        await setup.engine.start_container(container_id)
        setup.supervisor.output(container_id, b"hello\n")
        setup.supervisor.exit(container_id, 0)
        assert await reader.read() == frame(1, b"hello\n")

    run(tmp_path, test)


def test_attach_ends_when_start_fails(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        reader = await setup.engine.attach_container(container_id)
        setup.supervisor.create_error = NotFound("executable file not found in $PATH")
        with pytest.raises(InvalidArgument):
            await setup.engine.start_container(container_id)
        assert await reader.read() == b""

    run(tmp_path, test)


def test_attach_logs_replays_log(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        log_path = setup.data_root / "containers" / container_id / f"{container_id}-json.log"
        lines = [
            {"log": "out\n", "stream": "stdout", "time": "2026-01-01T00:00:00Z"},
            {"log": "err\n", "stream": "stderr", "time": "2026-01-01T00:00:00Z"},
        ]
        log_path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        reader = await setup.engine.attach_container(
            container_id, stderr=False, stream=False, logs=True
        )
        assert await reader.read() == frame(1, b"out\n")

    run(tmp_path, test)


def test_resolve_by_prefix_and_name(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), "named"))["Id"]
        assert setup.engine.inspect_container(container_id[:6])["Id"] == container_id
        assert setup.engine.inspect_container("named")["Id"] == container_id
        assert setup.engine.inspect_container("/named")["Id"] == container_id

    run(tmp_path, test)


def test_resolve_unknown(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        with pytest.raises(NotFound, match="No such container: nothing"):
            setup.engine.inspect_container("nothing")

    run(tmp_path, test)


def test_list_running_only_by_default(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        running = (await setup.engine.create_container(body(), "up"))["Id"]
        await setup.engine.create_container(body(), "idle")
        await setup.engine.start_container(running)
        assert [item["Names"] for item in setup.engine.list_containers()] == [["/up"]]
        assert len(setup.engine.list_containers(all=True)) == 2

    run(tmp_path, test)


def test_list_status_filter(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        await setup.engine.create_container(body(), "idle")
        listing = setup.engine.list_containers(filters={"status": ["created"]})
        assert [item["Names"] for item in listing] == [["/idle"]]

    run(tmp_path, test)


def test_list_unknown_filter(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        with pytest.raises(InvalidArgument, match="invalid filter 'colour'"):
            setup.engine.list_containers(filters={"colour": ["red"]})

    run(tmp_path, test)


def test_reconcile_records_missed_exit(tmp_path: Path) -> None:
    async def main() -> None:
        db = sqlite3.connect(":memory:", isolation_level=None)
        supervisor = FakeSupervisor()
        images = FakeImages(tmp_path / "images")
        first = Engine(data_root=tmp_path / "data", db=db, images=images, supervisor=supervisor)
        await first.start()
        container_id = (await first.create_container(body(), None))["Id"]
        await first.start_container(container_id)
        await first.close()

        # The container exits while no engine is following events.
        supervisor.containers[container_id].update(status="stopped", exit_code=5)
        supervisor.events = asyncio.Queue()
        second = Engine(data_root=tmp_path / "data", db=db, images=images, supervisor=supervisor)
        await second.start()
        state = second.inspect_container(container_id)["State"]
        await second.close()
        assert state["Status"] == "exited"
        assert state["ExitCode"] == 5

    asyncio.run(main())


def test_images_listed_with_container_count(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        await setup.engine.create_container(body(), None)
        summary = setup.engine.list_images()[0]
        assert summary["RepoTags"] == ["busybox:latest"]
        assert summary["Containers"] == 1
        assert summary["Created"] == 1767323045

    run(tmp_path, test)


def test_info_counts(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        await setup.engine.create_container(body(), None)
        info = setup.engine.info()
        assert info["Containers"] == 1
        assert info["ContainersStopped"] == 1
        assert info["Images"] == 1
        assert info["Driver"] == "overlay2"

    run(tmp_path, test)


def test_reconcile_undoes_interrupted_start(tmp_path: Path) -> None:
    async def main() -> None:
        db = sqlite3.connect(":memory:", isolation_level=None)
        supervisor = FakeSupervisor()
        images = FakeImages(tmp_path / "images")
        first = Engine(data_root=tmp_path / "data", db=db, images=images, supervisor=supervisor)
        await first.start()
        container_id = (await first.create_container(body(), None))["Id"]
        await first.start_container(container_id)
        await first.close()

        # ketchd stopped after the supervisor's create but before its start.
        supervisor.containers[container_id]["status"] = "created"
        supervisor.events = asyncio.Queue()
        second = Engine(data_root=tmp_path / "data", db=db, images=images, supervisor=supervisor)
        await second.start()
        state = second.inspect_container(container_id)["State"]
        restarted = await second.start_container(container_id)
        await second.close()
        assert state["Status"] == "created"
        assert state["Error"] == "ketchd stopped while starting the container"
        assert restarted is True

    asyncio.run(main())


def test_kill_empty_signal_is_sigkill(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        await setup.engine.start_container(container_id)
        await setup.engine.kill_container(container_id, "")
        assert setup.supervisor.signals == [signal.SIGKILL]

    run(tmp_path, test)


def test_kill_invalid_signal(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        container_id = (await setup.engine.create_container(body(), None))["Id"]
        await setup.engine.start_container(container_id)
        with pytest.raises(InvalidArgument, match="Invalid signal: SIGWHAT"):
            await setup.engine.kill_container(container_id, "SIGWHAT")

    run(tmp_path, test)


def _ipv6_binding_body(network_mode: str = "default") -> dict[str, Any]:
    return body(
        HostConfig={
            "NetworkMode": network_mode,
            "PortBindings": {"80/tcp": [{"HostIp": "::1", "HostPort": "18304"}]},
        }
    )


def test_create_rejects_ipv6_kernel_forwarding(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        assert setup.engine.ports is not None
        setup.engine.ports.kernel_rules = Firewall()

        with pytest.raises(InvalidArgument) as raised:
            await setup.engine.create_container(_ipv6_binding_body(), "v6")

        message = str(raised.value)
        assert "port 80/tcp on IPv6 host address ::1" in message
        assert "needs the userland proxy" in message
        assert setup.engine.containers.all() == []
        assert setup.images.prepared == set()

    run(tmp_path, test)


def test_create_ipv6_host_with_proxy(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        created = await setup.engine.create_container(_ipv6_binding_body(), None)
        assert len(created["Id"]) == 64

    run(tmp_path, test)


def test_create_ipv6_host_mode_kernel_rules(tmp_path: Path) -> None:
    async def test(setup: Setup) -> None:
        assert setup.engine.ports is not None
        setup.engine.ports.kernel_rules = Firewall()
        created = await setup.engine.create_container(_ipv6_binding_body("host"), None)
        assert created["Warnings"] == ["Published ports are discarded when using host network mode"]

    run(tmp_path, test)
