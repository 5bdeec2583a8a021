"""The supervisor with real containers: a busybox rootfs run by ketch.runtime.

One supervisor per module is started the way ketchd starts it, with ``ensure_supervisor``
in a temporary exec root, and stopped by its PID at the end. Each test deletes its
containers, and the teardown checks that no container process, cgroup, mount or runtime
state is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ketch.errors import NotFound
from ketch.supervisor.client import SupervisorClient, ensure_supervisor
from support.rootfs import cgroup_parents, make_busybox_rootfs, write_bundle

STOP_TIMEOUT_SECONDS = 20.0


@dataclass
class SupervisorSetup:
    root: Path
    exec_root: Path
    rootfs: Path
    cgroup_parent: str
    container_ids: list[str] = field(default_factory=list)

    @property
    def client(self) -> SupervisorClient:
        return SupervisorClient(self.exec_root)

    @property
    def pid(self) -> int:
        return int((self.exec_root / "supervisor.pid").read_text())

    def new_container(self, *args: str) -> tuple[str, Path, Path]:
        """Write a bundle that runs ``args``; return the id, the bundle and the log path."""
        container_id = f"c{len(self.container_ids) + 1}-{uuid.uuid4().hex[:6]}"
        self.container_ids.append(container_id)
        directory = self.root / "containers" / container_id
        bundle = write_bundle(
            directory / "bundle",
            self.rootfs,
            list(args),
            linux={"cgroupsPath": f"{self.cgroup_parent}/{container_id}"},
        )
        return container_id, bundle, directory / f"{container_id}-json.log"

    def cgroup_directories(self, container_id: str) -> list[Path]:
        """Return the container's cgroup directories that exist, in every hierarchy."""
        candidates = [parent / container_id for parent in cgroup_parents(self.cgroup_parent)]
        return [directory for directory in candidates if directory.is_dir()]


def stop_by_pid(pid: int) -> None:
    """Send SIGTERM to a process that is not our child and wait for it to exit."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        if not select.select([pidfd], [], [], STOP_TIMEOUT_SECONDS)[0]:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], STOP_TIMEOUT_SECONDS)
            raise AssertionError(f"supervisor {pid} ignored SIGTERM; killed it")
    finally:
        os.close(pidfd)


def mounts_under(root: Path) -> list[str]:
    prefix = f"{root}/"
    with open("/proc/self/mountinfo") as mountinfo:
        return [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)]


def start_setup() -> SupervisorSetup:
    # Unix socket paths are limited to 108 bytes, so the root is short and under /tmp.
    root = Path(tempfile.mkdtemp(prefix="ksup-i-", dir="/tmp"))
    setup = SupervisorSetup(
        root=root,
        exec_root=root / "exec",
        rootfs=make_busybox_rootfs(root / "rootfs"),
        cgroup_parent=f"ketch-suptest-{uuid.uuid4().hex[:8]}",
    )
    asyncio.run(ensure_supervisor(setup.exec_root))
    return setup


def tear_down(setup: SupervisorSetup) -> list[str]:
    """Stop the supervisor by its PID, remove what is left and return what was left."""
    leftovers = []
    pid_path = setup.exec_root / "supervisor.pid"
    if pid_path.exists():
        stop_by_pid(int(pid_path.read_text()))
    runtime_root = setup.exec_root / "runtime"
    if runtime_root.is_dir():
        leftovers += [f"runtime state {p}" for p in runtime_root.iterdir()]
    for target in mounts_under(setup.root):
        leftovers.append(f"mount {target}")
        os.system(f"umount -l '{target}'")
    for parent in cgroup_parents(setup.cgroup_parent):
        for child in parent.iterdir():
            if child.is_dir():
                leftovers.append(f"cgroup {child}")
                child.rmdir()
        parent.rmdir()
    shutil.rmtree(setup.root, ignore_errors=True)
    return leftovers


@pytest.fixture(scope="module")
def module_setup() -> Iterator[SupervisorSetup]:
    setup = start_setup()
    leftovers: list[str] = []
    try:
        yield setup
    finally:
        leftovers = tear_down(setup)
    assert leftovers == []


@pytest.fixture
def sup(module_setup: SupervisorSetup) -> Iterator[SupervisorSetup]:
    """The module's supervisor; the containers a test made are deleted after it."""
    first = len(module_setup.container_ids)
    try:
        yield module_setup
    finally:

        async def delete_all() -> None:
            for container_id in module_setup.container_ids[first:]:
                try:
                    await module_setup.client.delete(container_id, force=True)
                except NotFound:
                    pass

        asyncio.run(delete_all())


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


async def read_frames(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """Read Engine API frames until EOF."""
    frames = []
    while True:
        try:
            header = await reader.readexactly(8)
        except asyncio.IncompleteReadError as error:
            assert error.partial == b"", "stream ended inside a frame header"
            return frames
        stream, length = struct.unpack(">BxxxI", header)
        frames.append((stream, await reader.readexactly(length)))


async def run_attached(sup: SupervisorSetup, *args: str) -> tuple[str, list, dict[str, Any]]:
    """Create, attach before start, start and wait; return id, frames and wait result."""
    container_id, bundle, log_path = sup.new_container(*args)
    client = sup.client
    await client.create(container_id, bundle, log_path)
    reader = await client.attach(container_id)
    await client.start(container_id)
    frames = await read_frames(reader)
    return container_id, frames, await client.wait(container_id)


def test_attach_before_start_gets_hello(sup: SupervisorSetup) -> None:
    _, frames, status = run(run_attached(sup, "echo", "hello"))
    assert frames == [(1, b"hello\n")]
    assert status["exit_code"] == 0


def test_stderr_framed_as_stream_2(sup: SupervisorSetup) -> None:
    _, frames, _ = run(run_attached(sup, "sh", "-c", "echo oops >&2"))
    assert frames == [(2, b"oops\n")]


def test_exit_code_3_recorded(sup: SupervisorSetup) -> None:
    container_id, _, status = run(run_attached(sup, "sh", "-c", "exit 3"))
    assert status["exit_code"] == 3
    state = run(sup.client.state(container_id))
    assert state["status"] == "stopped"
    assert state["exit_code"] == 3
    record = json.loads((sup.exec_root / "supervisor" / f"{container_id}.json").read_text())
    assert record["exit_code"] == 3


def test_kill_9_exit_137(sup: SupervisorSetup) -> None:
    container_id, bundle, log_path = sup.new_container("sleep", "1000")

    async def scenario() -> dict[str, Any]:
        client = sup.client
        await client.create(container_id, bundle, log_path)
        await client.start(container_id)
        await client.kill(container_id, 9)
        return await client.wait(container_id)

    assert run(scenario())["exit_code"] == 137


PATH_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]


async def start_sleeping(sup: SupervisorSetup) -> str:
    container_id, bundle, log_path = sup.new_container("sleep", "1000")
    await sup.client.create(container_id, bundle, log_path)
    await sup.client.start(container_id)
    return container_id


async def exec_state(sup: SupervisorSetup, container_id: str, exec_id: str) -> dict[str, Any]:
    states = {state["exec_id"]: state for state in await sup.client.execs(container_id)}
    return states[exec_id]


def test_execs_remembers_exit_code(sup: SupervisorSetup) -> None:
    async def scenario() -> dict[str, Any]:
        container_id = await start_sleeping(sup)
        process = {"args": ["sh", "-c", "exit 7"], "cwd": "/", "env": PATH_ENV}
        reader, writer, _ = await sup.client.exec(container_id, "e7", process)
        await read_frames(reader)
        writer.close()
        return await exec_state(sup, container_id, "e7")

    state = run(scenario())
    assert state["status"] == "stopped"
    assert state["exit_code"] == 7


def test_execs_exit_without_client(sup: SupervisorSetup) -> None:
    # The engine's stream goes away first, as when ketchd is killed; the exit still counts.
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        container_id = await start_sleeping(sup)
        process = {"args": ["sleep", "1000"], "cwd": "/", "env": PATH_ENV}
        _, writer, _ = await sup.client.exec(container_id, "orphan", process)
        writer.close()
        running = await exec_state(sup, container_id, "orphan")
        await sup.client.kill("orphan", 9)
        for _ in range(200):
            stopped = await exec_state(sup, container_id, "orphan")
            if stopped["status"] == "stopped":
                break
            await asyncio.sleep(0.05)
        return running, stopped

    running, stopped = run(scenario())
    assert running["status"] == "running"
    assert running["exit_code"] is None
    assert stopped["status"] == "stopped"
    assert stopped["exit_code"] == 137


def test_execs_forgotten_with_container(sup: SupervisorSetup) -> None:
    async def scenario() -> list[dict[str, Any]]:
        container_id = await start_sleeping(sup)
        process = {"args": ["true"], "cwd": "/", "env": PATH_ENV}
        reader, writer, _ = await sup.client.exec(container_id, "gone", process)
        await read_frames(reader)
        writer.close()
        await sup.client.delete(container_id, force=True)
        return await sup.client.execs(container_id)

    assert run(scenario()) == []


def test_log_file_json_format(sup: SupervisorSetup) -> None:
    container_id, _, _ = run(run_attached(sup, "sh", "-c", "echo out; echo err >&2"))
    log_path = sup.root / "containers" / container_id / f"{container_id}-json.log"
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sorted((e["stream"], e["log"]) for e in entries) == [
        ("stderr", "err\n"),
        ("stdout", "out\n"),
    ]
    assert all(list(entry) == ["log", "stream", "time"] for entry in entries)
    # RFC 3339 UTC with up to nine fractional digits, as Go's RFC3339Nano writes it.
    assert all(entry["time"].endswith("Z") and "T" in entry["time"] for entry in entries)


def test_wait_after_output_delivered(sup: SupervisorSetup) -> None:
    # Once wait returns, the supervisor must have sent every frame and closed the attach
    # stream, so the rest arrives even while the supervisor is stopped with SIGSTOP.
    size = 2 << 20
    container_id, bundle, log_path = sup.new_container(
        "sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x"
    )
    pid = sup.pid

    async def scenario() -> int:
        client = sup.client
        await client.create(container_id, bundle, log_path)
        reader = await client.attach(container_id)
        await client.start(container_id)
        frames_task = asyncio.ensure_future(read_frames(reader))
        await client.wait(container_id)
        os.kill(pid, signal.SIGSTOP)
        try:
            frames = await asyncio.wait_for(frames_task, 10)
        finally:
            os.kill(pid, signal.SIGCONT)
        return len(b"".join(payload for _, payload in frames))

    assert run(scenario()) == size


def test_stdin_reaches_container(sup: SupervisorSetup) -> None:
    container_id, bundle, log_path = sup.new_container("tr", "a-z", "A-Z")

    async def scenario() -> list[tuple[int, bytes]]:
        client = sup.client
        await client.create(container_id, bundle, log_path, open_stdin=True)
        reader, writer = await client.attach_with_stdin(container_id)
        await client.start(container_id)
        writer.write(b"shout\n")
        writer.write_eof()
        return await read_frames(reader)

    assert run(scenario()) == [(1, b"SHOUT\n")]


def test_second_client_sees_state(sup: SupervisorSetup) -> None:
    container_id, bundle, log_path = sup.new_container("sh", "-c", "exit 5")

    async def first_client() -> None:
        client = SupervisorClient(sup.exec_root)
        await client.create(container_id, bundle, log_path)
        await client.start(container_id)

    async def second_client() -> tuple[dict[str, Any], dict[str, Any]]:
        client = SupervisorClient(sup.exec_root)
        status = await client.wait(container_id)
        listing = {c["id"]: c for c in await client.list()}
        return status, listing[container_id]

    run(first_client())
    status, listed = run(second_client())
    assert status["exit_code"] == 5
    assert listed["status"] == "stopped"
    assert listed["exit_code"] == 5


def test_executable_not_found(sup: SupervisorSetup) -> None:
    container_id, bundle, log_path = sup.new_container("no-such-command")
    with pytest.raises(NotFound, match=r"executable file not found in \$PATH"):
        run(sup.client.create(container_id, bundle, log_path))
    assert not log_path.exists()
    assert not (sup.exec_root / "supervisor" / f"{container_id}.json").exists()
    assert sup.cgroup_directories(container_id) == []


def test_delete_force_removes_cgroups(sup: SupervisorSetup) -> None:
    container_id, bundle, log_path = sup.new_container("sleep", "1000")

    async def scenario() -> tuple[list[Path], dict[str, Any]]:
        client = sup.client
        await client.create(container_id, bundle, log_path)
        await client.start(container_id)
        cgroups_while_running = sup.cgroup_directories(container_id)
        waiter = asyncio.ensure_future(client.wait(container_id))
        await client.delete(container_id, force=True)
        return cgroups_while_running, await waiter

    cgroups_while_running, status = run(scenario())
    assert cgroups_while_running != []
    assert status["exit_code"] == 137
    assert sup.cgroup_directories(container_id) == []
    assert not (sup.exec_root / "runtime" / container_id).exists()


def test_ensure_supervisor_reuses_running(sup: SupervisorSetup) -> None:
    pid = sup.pid
    run(ensure_supervisor(sup.exec_root))
    assert sup.pid == pid


def test_rss_per_idle_container(sup: SupervisorSetup) -> None:
    # Measured, not asserted: the supervisor's resident memory with 0 and 20 idle containers.
    count = 20

    def rss_kib() -> int:
        status = Path(f"/proc/{sup.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]
        )

    async def create_idle() -> float:
        client = sup.client
        started = time.monotonic()
        for _ in range(count):
            container_id, bundle, log_path = sup.new_container("sleep", "1000")
            await client.create(container_id, bundle, log_path)
            await client.start(container_id)
        return time.monotonic() - started

    idle_rss = rss_kib()
    seconds = run(create_idle())
    loaded_rss = rss_kib()
    print(
        f"\nsupervisor RSS: {idle_rss} KiB with 0 containers, {loaded_rss} KiB with {count} "
        f"idle containers ({(loaded_rss - idle_rss) / count:.0f} KiB each); "
        f"created and started {count} in {seconds:.2f} s"
    )


def test_stop_leaves_nothing() -> None:
    # A supervisor stopped by its PID stops its containers and deletes their cgroups,
    # runtime state and mounts, both for a running and for a created container.
    setup = start_setup()
    try:
        running_id, running_bundle, running_log = setup.new_container("sleep", "1000")
        created_id, created_bundle, created_log = setup.new_container("true")

        async def scenario() -> list[int]:
            client = setup.client
            pids = [await client.create(running_id, running_bundle, running_log)]
            await client.start(running_id)
            pids.append(await client.create(created_id, created_bundle, created_log))
            return pids

        pids = run(scenario())
        stop_by_pid(setup.pid)
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists()
        assert not (setup.exec_root / "supervisor.pid").exists()
        assert not (setup.exec_root / "supervisor.sock").exists()
        assert list((setup.exec_root / "runtime").iterdir()) == []
        assert setup.cgroup_directories(running_id) == []
        assert setup.cgroup_directories(created_id) == []
        records = setup.exec_root / "supervisor"
        assert json.loads((records / f"{running_id}.json").read_text())["exit_code"] == 137
    finally:
        leftovers = tear_down(setup)
    assert leftovers == []
