"""The Engine in-process against a real registry, image store and supervisor.

One registry contains busybox (made by the project's base-image script); one engine with
temporary data and exec roots pulls it once and runs every test's containers. Teardown
removes the containers, stops the supervisor by its PID, and unmounts and deletes the
roots, also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ketch.engine import Engine
from ketch.engine.daemon import open_database
from ketch.errors import Conflict, InvalidArgument, NotFound
from support.registry import start_registry

T = TypeVar("T")
STDOUT, STDERR = 1, 2


@dataclass
class EngineUnderTest:
    root: Path
    loop: asyncio.AbstractEventLoop
    db: sqlite3.Connection
    images: Any
    engine: Engine

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, timeout))

    def new_engine(self) -> Engine:
        return make_engine(self.data_root, self.exec_root, self.db, self.images)


def make_engine(data_root: Path, exec_root: Path, db: sqlite3.Connection, images: Any) -> Engine:
    from ketch.supervisor.client import SupervisorClient

    return Engine(data_root=data_root, db=db, images=images, supervisor=SupervisorClient(exec_root))


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        return [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)]


def _supervisor_pid(exec_root: Path) -> int | None:
    try:
        text = (exec_root / "supervisor.pid").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_dir(exec_root: Path, controller: str, container_id: str) -> Path:
    """The container's cgroup, which the runtime makes under the supervisor's cgroup."""
    pid = _supervisor_pid(exec_root)
    assert pid is not None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup", controller, path.lstrip("/"), "ketch", container_id)
    raise AssertionError(f"no {controller} cgroup for the supervisor")


def _teardown(under_test: EngineUnderTest) -> None:
    try:
        for summary in under_test.engine.list_containers(all=True):
            try:
                under_test.run(under_test.engine.remove_container(summary["Id"], force=True))
            except Exception as error:  # keep tearing down the rest
                print(f"cannot remove {summary['Id']}: {error}", file=sys.stderr)
        under_test.run(under_test.engine.close())
    finally:
        pid = _supervisor_pid(under_test.exec_root)
        if pid is not None:
            _stop_pid(pid)
        for target in sorted(_mounts_under(under_test.root), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False)
        under_test.db.close()
        under_test.loop.close()


@pytest.fixture(scope="module")
def engine_env() -> Iterator[EngineUnderTest]:
    from ketch.images import ImageStore
    from ketch.supervisor.client import ensure_supervisor

    # Unix socket paths are limited to 108 bytes, so the root is short and under /tmp.
    root = Path(tempfile.mkdtemp(prefix="ketch-engine-", dir="/tmp"))
    registry = start_registry(root / "registry")
    loop = asyncio.new_event_loop()
    under_test = None
    try:
        subprocess.run(
            [sys.executable, "-m", "ketch.images.baseimage", "--registry", registry.address],
            check=True,
            capture_output=True,
            timeout=120,
        )
        (root / "data").mkdir()
        db = open_database(root / "data" / "ketch.db")
        images = ImageStore(root / "data" / "images", db, mirrors=[f"http://{registry.address}"])
        loop.run_until_complete(ensure_supervisor(root / "exec"))
        engine = make_engine(root / "data", root / "exec", db, images)
        under_test = EngineUnderTest(root, loop, db, images, engine)
        under_test.run(under_test.engine.start())
        under_test.run(under_test.engine.pull_image("busybox", None), timeout=120)
        yield under_test
    finally:
        try:
            if under_test is not None:
                _teardown(under_test)
            else:
                loop.close()
                pid = _supervisor_pid(root / "exec")
                if pid is not None:
                    _stop_pid(pid)
        finally:
            registry.stop()
            shutil.rmtree(root, ignore_errors=True)


def body(*cmd: str, **fields: Any) -> dict[str, Any]:
    host_config = {"NetworkMode": "none", **fields.pop("HostConfig", {})}
    return {"Image": "busybox", "Cmd": list(cmd), "HostConfig": host_config, **fields}


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while data:
        stream, length = data[0], int.from_bytes(data[4:8], "big")
        frames.append((stream, data[8 : 8 + length]))
        data = data[8 + length :]
    return frames


def output_of(data: bytes, stream: int = STDOUT) -> bytes:
    return b"".join(payload for kind, payload in parse_frames(data) if kind == stream)


async def run_container(
    engine: Engine, request: dict[str, Any], name: str | None = None
) -> tuple[str, bytes, dict[str, Any]]:
    """Do what `docker run` does: create, attach, wait, start, read to EOF."""
    container_id = (await engine.create_container(request, name))["Id"]
    reader = await engine.attach_container(container_id)
    condition = "removed" if request["HostConfig"].get("AutoRemove") else "next-exit"
    waiter = engine.wait_container(container_id, condition)
    await engine.start_container(container_id)
    output = await reader.read()
    return container_id, output, await waiter


def test_run_echo_prints_hello(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    _, output, result = engine_env.run(run_container(engine, body("echo", "hello")))
    assert output == b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"
    assert result == {"StatusCode": 0, "Error": None}


def test_run_auto_remove_leaves_nothing(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    request = body("sh", "-c", "exit 4", HostConfig={"AutoRemove": True})
    container_id, _, result = engine_env.run(run_container(engine, request))
    assert result["StatusCode"] == 4
    with pytest.raises(NotFound):
        engine.inspect_container(container_id)
    assert not (engine_env.data_root / "containers" / container_id).exists()
    assert [m for m in _mounts_under(engine_env.data_root) if container_id in m] == []


def test_run_exit_code_and_state(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    container_id, _, result = engine_env.run(run_container(engine, body("sh", "-c", "exit 3")))
    state = engine.inspect_container(container_id)["State"]
    assert result["StatusCode"] == 3
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 3
    assert state["FinishedAt"] != "0001-01-01T00:00:00Z"


def test_run_stderr_framed_and_logged(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    request = body("sh", "-c", "echo out; echo err >&2")
    container_id, output, _ = engine_env.run(run_container(engine, request))
    assert output_of(output, STDOUT) == b"out\n"
    assert output_of(output, STDERR) == b"err\n"
    log_path = Path(engine.inspect_container(container_id)["LogPath"])
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sorted((entry["stream"], entry["log"]) for entry in entries) == [
        ("stderr", "err\n"),
        ("stdout", "out\n"),
    ]
    assert all(entry["time"].endswith("Z") for entry in entries)


def test_run_env_hostname_and_loopback_only(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    script = 'echo "$GREETING"; hostname; ls /sys/class/net; cat /etc/hostname'
    request = body("sh", "-c", script, Env=["GREETING=hi there"])
    container_id, output, _ = engine_env.run(run_container(engine, request))
    lines = output_of(output).decode().splitlines()
    assert lines == ["hi there", container_id[:12], "lo", container_id[:12]]


def test_run_default_network_warns(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    request = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"AutoRemove": True}}
    created = engine_env.run(engine.create_container(request, None))
    engine_env.run(engine.remove_container(created["Id"]))
    assert "bridge networking is not implemented" in created["Warnings"][0]


def test_run_user_by_name_and_number(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    _, by_name, _ = engine_env.run(run_container(engine, body("id", User="nobody")))
    _, by_number, _ = engine_env.run(run_container(engine, body("id", "-u", User="1234:5678")))
    assert output_of(by_name).startswith(b"uid=65534(nobody) gid=65534(nogroup)")
    assert output_of(by_number) == b"1234\n"


def test_run_working_dir(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    _, output, _ = engine_env.run(run_container(engine, body("pwd", WorkingDir="/tmp")))
    assert output_of(output) == b"/tmp\n"


def test_run_memory_and_pids_limits(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    limits = {"Memory": 64 * 1024 * 1024, "PidsLimit": 32}
    request = body("sleep", "30", HostConfig=limits)
    container_id = engine_env.run(engine.create_container(request, None))["Id"]
    engine_env.run(engine.start_container(container_id))
    try:
        memory = _cgroup_dir(engine_env.exec_root, "memory", container_id)
        pids = _cgroup_dir(engine_env.exec_root, "pids", container_id)
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
        assert (pids / "pids.max").read_text().strip() == "32"
    finally:
        engine_env.run(engine.remove_container(container_id, force=True))


def test_missing_executable_start_fails(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    container_id = engine_env.run(engine.create_container(body("no-such-command"), None))["Id"]
    with pytest.raises(InvalidArgument, match="executable file not found"):
        engine_env.run(engine.start_container(container_id))
    state = engine.inspect_container(container_id)["State"]
    engine_env.run(engine.remove_container(container_id))
    assert state["Status"] == "created"
    assert state["ExitCode"] == 127
    assert "no-such-command" in state["Error"]


def test_failed_create_leaves_nothing(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    directories_before = set(os.listdir(engine_env.data_root / "containers"))
    mounts_before = set(_mounts_under(engine_env.data_root))
    with pytest.raises(InvalidArgument, match="unable to find user nosuchuser"):
        engine_env.run(engine.create_container(body("true", User="nosuchuser"), "half-made"))
    assert set(os.listdir(engine_env.data_root / "containers")) == directories_before
    assert set(_mounts_under(engine_env.data_root)) == mounts_before
    assert [c for c in engine.list_containers(all=True) if c["Names"] == ["/half-made"]] == []


def test_name_conflict(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    first = engine_env.run(engine.create_container(body("true"), "taken-name"))["Id"]
    try:
        with pytest.raises(Conflict, match=f'already in use by container "{first}"'):
            engine_env.run(engine.create_container(body("true"), "taken-name"))
    finally:
        engine_env.run(engine.remove_container(first))


def test_stop_escalates_to_sigkill(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    # sleep as PID 1 has no SIGTERM handler, so the kernel ignores SIGTERM for it.
    container_id = engine_env.run(engine.create_container(body("sleep", "300"), None))["Id"]
    engine_env.run(engine.start_container(container_id))
    started = time.monotonic()
    engine_env.run(engine.stop_container(container_id, timeout=1))
    elapsed = time.monotonic() - started
    state = engine.inspect_container(container_id)["State"]
    engine_env.run(engine.remove_container(container_id))
    assert state["ExitCode"] == 137
    assert 1 <= elapsed < 10


def test_stop_with_trap_exits_cleanly(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    script = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    container_id = engine_env.run(engine.create_container(body("sh", "-c", script), None))["Id"]
    reader = engine_env.run(engine.attach_container(container_id))
    engine_env.run(engine.start_container(container_id))
    engine_env.run(reader.readexactly(8 + len(b"ready\n")))
    engine_env.run(engine.stop_container(container_id, timeout=10))
    state = engine.inspect_container(container_id)["State"]
    engine_env.run(engine.remove_container(container_id))
    assert state["ExitCode"] == 0


def test_remove_force_running(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    container_id = engine_env.run(engine.create_container(body("sleep", "300"), "forced"))["Id"]
    engine_env.run(engine.start_container(container_id))
    with pytest.raises(Conflict, match="You cannot remove a running container"):
        engine_env.run(engine.remove_container("forced"))
    engine_env.run(engine.remove_container("forced", force=True))
    with pytest.raises(NotFound):
        engine.inspect_container(container_id)
    assert not _cgroup_dir(engine_env.exec_root, "memory", container_id).exists()


def test_list_shows_running_container(engine_env: EngineUnderTest) -> None:
    engine = engine_env.engine
    container_id = engine_env.run(engine.create_container(body("sleep", "300"), "lister"))["Id"]
    engine_env.run(engine.start_container(container_id))
    try:
        listing = engine.list_containers()
        mine = [item for item in listing if item["Id"] == container_id]
        assert mine[0]["Status"].startswith("Up ")
        assert mine[0]["Names"] == ["/lister"]
    finally:
        engine_env.run(engine.remove_container(container_id, force=True))


def test_engine_restart_catches_missed_exit(engine_env: EngineUnderTest) -> None:
    container_id = engine_env.run(engine_env.engine.create_container(body("sleep", "300"), None))[
        "Id"
    ]
    engine_env.run(engine_env.engine.start_container(container_id))
    engine_env.run(engine_env.engine.close())

    # While no engine follows the supervisor's events, the container is killed.
    pid = engine_env.engine.inspect_container(container_id)["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)

    engine_env.engine = engine_env.new_engine()
    engine_env.run(engine_env.engine.start())
    state = engine_env.engine.inspect_container(container_id)["State"]
    engine_env.run(engine_env.engine.remove_container(container_id))
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 137
