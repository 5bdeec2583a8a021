"""The supervisor's event loop, stdio handling and protocol, without root.

The supervisor runs in a process forked from the test, with ``PlainProcessRuntime`` in
place of the OCI runtime. That stand-in runs the bundle's ``process.args`` as an ordinary
child process (no namespaces, cgroups or rootfs), parked on a pipe until ``start``. The
supervisor depends on nothing more. tests/integration/test_supervisor_containers.py runs the
same paths with real containers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.linux.syscalls import set_parent_death_signal
from ketch.supervisor.client import SupervisorClient

STOP_TIMEOUT_SECONDS = 10.0


class PlainProcessRuntime:
    """Runs a bundle's process as a plain child of the caller, parked until start."""

    def __init__(self) -> None:
        self._start_fds: dict[str, int] = {}
        self._pids: dict[str, int] = {}

    def create(
        self, container_id: str, bundle: Path, *, stdio: tuple[int, int, int] | None = None
    ) -> int:
        if container_id in self._pids:
            raise Conflict(f"container {container_id} already exists")
        config_path = bundle / "config.json"
        if not config_path.exists():
            raise NotFound(f"bundle {bundle} has no config.json")
        args = json.loads(config_path.read_text())["process"]["args"]
        start_read, start_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            _run_parked_child(args, stdio, start_read)
        os.close(start_read)
        self._start_fds[container_id] = start_write
        self._pids[container_id] = pid
        return pid

    def start(self, container_id: str) -> None:
        fd = self._start_fds.pop(container_id)
        os.write(fd, b"s")
        os.close(fd)

    def kill(self, container_id: str, signal: int, all: bool = False) -> None:
        os.kill(self._pids[container_id], signal)

    def delete(self, container_id: str, force: bool = False) -> None:
        if container_id not in self._pids:
            raise NotFound(f"container {container_id} does not exist")
        del self._pids[container_id]
        start_fd = self._start_fds.pop(container_id, None)
        if start_fd is not None:
            os.close(start_fd)


def _run_parked_child(args: list[str], stdio: tuple[int, int, int] | None, start_fd: int) -> None:
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        if stdio is not None:
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
        if os.read(start_fd, 1) == b"s":
            os.execvp(args[0], args)
    finally:
        os._exit(127)


@dataclass
class RunningSupervisor:
    exec_root: Path
    pid: int
    work: Path

    @property
    def client(self) -> SupervisorClient:
        return SupervisorClient(self.exec_root)

    def bundle(self, name: str, *args: str) -> Path:
        """Write a bundle that runs ``args`` and make the directory for its log."""
        bundle = self.work / name
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps({"process": {"args": list(args)}}))
        return bundle

    def log_path(self, name: str) -> Path:
        return self.work / name / f"{name}-json.log"

    def record(self, container_id: str) -> dict[str, object]:
        return json.loads((self.exec_root / "supervisor" / f"{container_id}.json").read_text())


def _serve_in_child(exec_root: Path) -> None:
    code = 1
    try:
        # If the test process dies, the supervisor stops too. Its output goes to a file, so
        # it never keeps the test's output pipes open.
        set_parent_death_signal(signal.SIGTERM)
        log_fd = os.open(
            exec_root.parent / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        from ketch.supervisor import container
        from ketch.supervisor.server import Supervisor

        # Short, so that the test of output held open by a leftover process is quick.
        container.DRAIN_TIMEOUT_SECONDS = 0.5

        supervisor = Supervisor(exec_root, PlainProcessRuntime(), shutdown_timeout=1.0)
        supervisor.start()
        supervisor.run()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _start_supervisor(exec_root: Path) -> int:
    pid = os.fork()
    if pid == 0:
        _serve_in_child(exec_root)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while not (exec_root / "supervisor.sock").exists():
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            raise RuntimeError("the supervisor exited during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError("the supervisor did not create its socket")
        time.sleep(0.01)
    return pid


def _stop_supervisor(pid: int) -> int:
    """Send SIGTERM, wait for the exit, SIGKILL after the timeout; return the exit status."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.fixture
def supervisor() -> Iterator[RunningSupervisor]:
    # Unix socket paths are limited to 108 bytes, so the exec root is short and under /tmp.
    root = Path(tempfile.mkdtemp(prefix="ksup-", dir="/tmp"))
    exec_root = root / "exec"
    work = root / "work"
    work.mkdir()
    handle = RunningSupervisor(exec_root, _start_supervisor(exec_root), work)
    try:
        yield handle
    finally:
        # Tests that stop or restart the supervisor update handle.pid.
        if handle.pid:
            _stop_supervisor(handle.pid)
        shutil.rmtree(root, ignore_errors=True)


def run(coroutine: object) -> object:
    return asyncio.run(asyncio.wait_for(coroutine, 20))  # type: ignore[arg-type]


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


def joined(frames: list[tuple[int, bytes]], stream: int) -> bytes:
    return b"".join(payload for kind, payload in frames if kind == stream)


async def create_and_run(
    sup: RunningSupervisor, name: str, *args: str
) -> tuple[list[tuple[int, bytes]], dict[str, object]]:
    """Create, attach, start and wait; return the frames and the wait result."""
    client = sup.client
    await client.create(name, sup.bundle(name, *args), sup.log_path(name))
    reader = await client.attach(name)
    await client.start(name)
    frames = await read_frames(reader)
    return frames, await client.wait(name)


def test_ping_returns_pid(supervisor: RunningSupervisor) -> None:
    response = run(supervisor.client.ping())
    assert response["pid"] == supervisor.pid  # type: ignore[index]


def test_socket_mode_is_0600(supervisor: RunningSupervisor) -> None:
    mode = (supervisor.exec_root / "supervisor.sock").stat().st_mode & 0o777
    assert mode == 0o600


def test_pid_file_names_supervisor(supervisor: RunningSupervisor) -> None:
    text = (supervisor.exec_root / "supervisor.pid").read_text()
    assert text.strip() == str(supervisor.pid)


def test_attach_before_start_gets_stdout(supervisor: RunningSupervisor) -> None:
    frames, status = run(create_and_run(supervisor, "c1", "echo", "hello"))  # type: ignore[misc]
    assert frames == [(1, b"hello\n")]
    assert status["exit_code"] == 0


def test_attach_stderr_is_stream_2(supervisor: RunningSupervisor) -> None:
    frames, _ = run(create_and_run(supervisor, "c1", "sh", "-c", "echo oops >&2"))  # type: ignore[misc]
    assert frames == [(2, b"oops\n")]


def test_attach_stdout_only(supervisor: RunningSupervisor) -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        client = supervisor.client
        bundle = supervisor.bundle("c1", "sh", "-c", "echo out; echo err >&2")
        await client.create("c1", bundle, supervisor.log_path("c1"))
        reader = await client.attach("c1", stdout=True, stderr=False)
        await client.start("c1")
        return await read_frames(reader)

    frames = run(scenario())
    assert frames == [(1, b"out\n")]


def test_exit_code_recorded(supervisor: RunningSupervisor) -> None:
    _, status = run(create_and_run(supervisor, "c1", "sh", "-c", "exit 3"))  # type: ignore[misc]
    assert status["exit_code"] == 3
    state = run(supervisor.client.state("c1"))
    assert state["status"] == "stopped"  # type: ignore[index]
    assert state["exit_code"] == 3  # type: ignore[index]
    assert supervisor.record("c1")["exit_code"] == 3


def test_state_fields(supervisor: RunningSupervisor) -> None:
    _, status = run(create_and_run(supervisor, "c1", "true"))  # type: ignore[misc]
    state = run(supervisor.client.state("c1"))
    assert set(state) == {"id", "status", "pid", "exit_code", "started_at", "finished_at"}  # type: ignore[arg-type]
    assert state["finished_at"] == status["finished_at"]  # type: ignore[index]
    assert state["started_at"].endswith("Z")  # type: ignore[index]


def test_kill_9_gives_137(supervisor: RunningSupervisor) -> None:
    async def scenario() -> dict[str, object]:
        client = supervisor.client
        await client.create(
            "c1", supervisor.bundle("c1", "sleep", "100"), supervisor.log_path("c1")
        )
        await client.start("c1")
        assert (await client.state("c1"))["status"] == "running"
        await client.kill("c1", 9)
        return await client.wait("c1")

    assert run(scenario())["exit_code"] == 137  # type: ignore[index]


def test_log_file_json_lines(supervisor: RunningSupervisor) -> None:
    run(create_and_run(supervisor, "c1", "sh", "-c", "echo a; echo b >&2; printf tail"))
    lines = supervisor.log_path("c1").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["log"], e["stream"]) for e in entries if e["stream"] == "stdout"] == [
        ("a\n", "stdout"),
        ("tail", "stdout"),
    ]
    assert [e["log"] for e in entries if e["stream"] == "stderr"] == ["b\n"]
    assert all(list(e) == ["log", "stream", "time"] for e in entries)
    assert all(e["time"].endswith("Z") for e in entries)


def test_wait_after_all_output(supervisor: RunningSupervisor) -> None:
    # Once wait returns, the supervisor must have sent every frame and closed the attach
    # stream, so the rest arrives even while the supervisor is stopped with SIGSTOP.
    size = 4 << 20

    async def scenario() -> int:
        client = supervisor.client
        bundle = supervisor.bundle("c1", "sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x")
        await client.create("c1", bundle, supervisor.log_path("c1"))
        reader = await client.attach("c1")
        await client.start("c1")
        frames_task = asyncio.ensure_future(read_frames(reader))
        await client.wait("c1")
        os.kill(supervisor.pid, signal.SIGSTOP)
        try:
            frames = await asyncio.wait_for(frames_task, 10)
        finally:
            os.kill(supervisor.pid, signal.SIGCONT)
        return len(joined(frames, 1))

    assert run(scenario()) == size


def test_wait_result_on_second_client(supervisor: RunningSupervisor) -> None:
    async def first() -> None:
        client = supervisor.client
        await client.create(
            "c1", supervisor.bundle("c1", "sh", "-c", "exit 5"), supervisor.log_path("c1")
        )
        await client.start("c1")

    async def second() -> tuple[dict[str, object], list[dict[str, object]]]:
        client = SupervisorClient(supervisor.exec_root)
        return await client.wait("c1"), await client.list()

    run(first())
    status, listing = run(second())  # type: ignore[misc]
    assert status["exit_code"] == 5
    assert [(c["id"], c["status"], c["exit_code"]) for c in listing] == [("c1", "stopped", 5)]


def test_events_report_exit(supervisor: RunningSupervisor) -> None:
    async def scenario() -> dict[str, object]:
        client = supervisor.client
        events = await client.subscribe()
        await client.create(
            "c1", supervisor.bundle("c1", "sh", "-c", "exit 4"), supervisor.log_path("c1")
        )
        await client.start("c1")
        event = await events.__anext__()
        events.close()
        return event

    event = run(scenario())
    assert event["type"] == "exit"  # type: ignore[index]
    assert event["id"] == "c1"  # type: ignore[index]
    assert event["exit_code"] == 4  # type: ignore[index]


def test_create_duplicate_id_conflict(supervisor: RunningSupervisor) -> None:
    async def scenario() -> None:
        client = supervisor.client
        await client.create("c1", supervisor.bundle("c1", "true"), supervisor.log_path("c1"))
        await client.create("c1", supervisor.bundle("c2", "true"), supervisor.log_path("c2"))

    with pytest.raises(Conflict, match="c1 already exists"):
        run(scenario())


def test_create_missing_log_dir(supervisor: RunningSupervisor) -> None:
    bundle = supervisor.bundle("c1", "true")
    missing = supervisor.work / "absent" / "c1-json.log"
    with pytest.raises(NotFound, match="directory does not exist"):
        run(supervisor.client.create("c1", bundle, missing))
    assert run(supervisor.client.list()) == []


def test_create_failure_leaves_nothing(supervisor: RunningSupervisor) -> None:
    bundle = supervisor.work / "no-bundle"
    bundle.mkdir()
    log_path = bundle / "c1-json.log"
    with pytest.raises(NotFound, match="config.json"):
        run(supervisor.client.create("c1", bundle, log_path))
    assert not log_path.exists()
    assert not (supervisor.exec_root / "supervisor" / "c1.json").exists()


def test_create_invalid_id(supervisor: RunningSupervisor) -> None:
    bundle = supervisor.bundle("c1", "true")
    with pytest.raises(InvalidArgument, match="invalid container id '../c1'"):
        run(supervisor.client.create("../c1", bundle, supervisor.log_path("c1")))


def test_state_unknown_container(supervisor: RunningSupervisor) -> None:
    with pytest.raises(NotFound, match="No such container: ghost"):
        run(supervisor.client.state("ghost"))


def test_kill_stopped_conflict(supervisor: RunningSupervisor) -> None:
    run(create_and_run(supervisor, "c1", "true"))
    with pytest.raises(Conflict, match="not running"):
        run(supervisor.client.kill("c1", 15))


def test_start_twice_conflict(supervisor: RunningSupervisor) -> None:
    async def scenario() -> None:
        client = supervisor.client
        await client.create(
            "c1", supervisor.bundle("c1", "sleep", "100"), supervisor.log_path("c1")
        )
        await client.start("c1")
        try:
            await client.start("c1")
        finally:
            await client.delete("c1", force=True)

    with pytest.raises(Conflict, match="only a created one can start"):
        run(scenario())


def test_delete_running_needs_force(supervisor: RunningSupervisor) -> None:
    async def scenario() -> None:
        client = supervisor.client
        await client.create(
            "c1", supervisor.bundle("c1", "sleep", "100"), supervisor.log_path("c1")
        )
        await client.start("c1")
        try:
            await client.delete("c1")
        finally:
            await client.delete("c1", force=True)

    with pytest.raises(Conflict, match="is running"):
        run(scenario())


def test_delete_force_reports_exit_first(supervisor: RunningSupervisor) -> None:
    async def scenario() -> tuple[dict[str, object], list[dict[str, object]]]:
        client = supervisor.client
        await client.create(
            "c1", supervisor.bundle("c1", "sleep", "100"), supervisor.log_path("c1")
        )
        await client.start("c1")
        waiter = asyncio.ensure_future(client.wait("c1"))
        await asyncio.sleep(0.05)
        await client.delete("c1", force=True)
        assert waiter.done()
        return await waiter, await client.list()

    status, listing = run(scenario())  # type: ignore[misc]
    assert status["exit_code"] == 137
    assert listing == []
    assert not (supervisor.exec_root / "supervisor" / "c1.json").exists()


def test_delete_created_without_force(supervisor: RunningSupervisor) -> None:
    async def scenario() -> list[dict[str, object]]:
        client = supervisor.client
        await client.create("c1", supervisor.bundle("c1", "true"), supervisor.log_path("c1"))
        await client.delete("c1")
        return await client.list()

    assert run(scenario()) == []


def test_stdin_attach_reaches_container(supervisor: RunningSupervisor) -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        client = supervisor.client
        bundle = supervisor.bundle("c1", "cat")
        await client.create("c1", bundle, supervisor.log_path("c1"), open_stdin=True)
        reader, writer = await client.attach_with_stdin("c1")
        await client.start("c1")
        writer.write(b"through stdin\n")
        writer.write_eof()
        return await read_frames(reader)

    assert run(scenario()) == [(1, b"through stdin\n")]


def test_stdin_attach_needs_open_stdin(supervisor: RunningSupervisor) -> None:
    async def scenario() -> None:
        client = supervisor.client
        await client.create("c1", supervisor.bundle("c1", "cat"), supervisor.log_path("c1"))
        await client.attach_with_stdin("c1")

    with pytest.raises(InvalidArgument, match="without open_stdin"):
        run(scenario())


def test_slow_attach_client_dropped(supervisor: RunningSupervisor) -> None:
    # A client that never reads must cost neither the log nor the exit report.
    size = 16 << 20

    async def scenario() -> dict[str, object]:
        client = supervisor.client
        bundle = supervisor.bundle("c1", "sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x")
        await client.create("c1", bundle, supervisor.log_path("c1"))
        stalled = await client.attach("c1")
        await client.start("c1")
        status = await client.wait("c1")
        stalled.close()
        return status

    assert run(scenario())["exit_code"] == 0  # type: ignore[index]
    entries = [json.loads(line) for line in supervisor.log_path("c1").read_text().splitlines()]
    assert sum(len(entry["log"]) for entry in entries) == size


def test_vanished_attach_client(supervisor: RunningSupervisor) -> None:
    async def scenario() -> dict[str, object]:
        client = supervisor.client
        bundle = supervisor.bundle("c1", "sh", "-c", "sleep 0.2; echo late")
        await client.create("c1", bundle, supervisor.log_path("c1"))
        gone = await client.attach("c1")
        gone.close()
        await client.start("c1")
        return await client.wait("c1")

    assert run(scenario())["exit_code"] == 0  # type: ignore[index]
    assert "late" in supervisor.log_path("c1").read_text()


def test_exit_reported_despite_open_output(supervisor: RunningSupervisor) -> None:
    # Without a pid namespace, a background process can keep the output pipes open after
    # the init exits. The exit is still reported, after the drain timeout.
    async def scenario() -> tuple[list[tuple[int, bytes]], dict[str, object]]:
        return await create_and_run(supervisor, "c1", "sh", "-c", "sleep 2 & echo hi; exit 6")

    started = time.monotonic()
    frames, status = run(scenario())  # type: ignore[misc]
    assert status["exit_code"] == 6
    assert frames == [(1, b"hi\n")]
    assert time.monotonic() - started < 1.9
    assert '"log":"hi\\n"' in supervisor.log_path("c1").read_text()


def test_malformed_request_answered(supervisor: RunningSupervisor) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(supervisor.exec_root / "supervisor.sock"))
        sock.sendall(b'not json\n{"op": "ping"}\n')
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    first, second = [json.loads(line) for line in data.splitlines()]
    assert first["kind"] == "InvalidArgument"
    assert second["ok"] is True


def test_stop_signal_stops_containers(supervisor: RunningSupervisor) -> None:
    async def scenario() -> None:
        client = supervisor.client
        await client.create(
            "c1", supervisor.bundle("c1", "sleep", "100"), supervisor.log_path("c1")
        )
        await client.start("c1")
        await client.create(
            "c2", supervisor.bundle("c2", "sleep", "100"), supervisor.log_path("c2")
        )

    run(scenario())
    pids = [supervisor.record(name)["pid"] for name in ("c1", "c2")]
    status = _stop_supervisor(supervisor.pid)
    supervisor.pid = 0
    assert status == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    assert supervisor.record("c1")["exit_code"] == 128 + signal.SIGTERM
    assert supervisor.record("c2")["exit_code"] == 128 + signal.SIGKILL
    assert not (supervisor.exec_root / "supervisor.sock").exists()
    assert not (supervisor.exec_root / "supervisor.pid").exists()


def test_restart_restores_stopped(supervisor: RunningSupervisor) -> None:
    run(create_and_run(supervisor, "c1", "sh", "-c", "exit 7"))
    _stop_supervisor(supervisor.pid)
    supervisor.pid = _start_supervisor(supervisor.exec_root)
    state = run(supervisor.client.state("c1"))
    assert state["status"] == "stopped"  # type: ignore[index]
    assert state["exit_code"] == 7  # type: ignore[index]
    assert run(supervisor.client.wait("c1"))["exit_code"] == 7  # type: ignore[index]


def test_restart_records_lost_exit(supervisor: RunningSupervisor) -> None:
    # A record left "running" by a supervisor that died means the exit status is lost.
    _stop_supervisor(supervisor.pid)
    record = {"id": "lost", "bundle": "/b", "log_path": "/l", "pid": 0, "status": "running"}
    (supervisor.exec_root / "supervisor" / "lost.json").write_text(json.dumps(record))
    supervisor.pid = _start_supervisor(supervisor.exec_root)
    state = run(supervisor.client.state("lost"))
    assert state["status"] == "stopped"  # type: ignore[index]
    assert state["exit_code"] == 255  # type: ignore[index]
    assert supervisor.record("lost")["status"] == "stopped"


def test_second_supervisor_refused(supervisor: RunningSupervisor) -> None:
    from ketch.supervisor.process import lock_pid_file

    with pytest.raises(Conflict, match=f"pid {supervisor.pid}"):
        lock_pid_file(supervisor.exec_root / "supervisor.pid")


def test_create_releases_free_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ketch.supervisor import process
    from ketch.supervisor.records import RecordStore
    from ketch.supervisor.server import Supervisor
    from ketch.supervisor.stdio import LogRotation

    calls: list[str] = []
    monkeypatch.setattr(process, "release_free_heap", lambda: calls.append("malloc_trim"))
    exec_root = tmp_path / "exec"
    supervisor = Supervisor(exec_root, PlainProcessRuntime())
    # Set by start(), which would also make the test process a subreaper.
    supervisor._records = RecordStore(exec_root / "supervisor")
    bundle = tmp_path / "c1"
    bundle.mkdir()
    log_path = bundle / "c1-json.log"

    with pytest.raises(NotFound, match="config.json"):
        supervisor.create_container("c1", bundle, log_path, False, LogRotation())
    assert calls == ["malloc_trim"]

    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["true"]}}))
    container = supervisor.create_container("c1", bundle, log_path, False, LogRotation())
    try:
        assert calls == ["malloc_trim", "malloc_trim"]
    finally:
        os.kill(container.record.pid, signal.SIGKILL)
        os.waitpid(container.record.pid, 0)
        container.close()
        supervisor.loop.close()
