"""When the container's init joins its cgroups, and how the verbs act until it has.

With ``join_cgroups_after_ready`` (which ``ketch-runc create`` passes) and no hooks,
create returns once the init is ready, and the init joins its cgroups after that,
before it waits for start. ps, kill --all and delete of a created container put the
init in the cgroups themselves first.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from ketch.errors import SystemFailure
from ketch.runtime.cgroups.base import is_unified
from ketch.runtime.cgroups.v1 import V1Manager
from support.rootfs import read_until_closed
from support.runtime_cli import Cli

pytest_plugins = ["support.rootfs"]


def _controller_paths(cgroup_text: str) -> dict[str, str]:
    """Return {controller list: path} of the v1 controller lines of /proc/<pid>/cgroup."""
    paths = {}
    for line in cgroup_text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers and not controllers.startswith("name="):
            paths[controllers] = path
    return paths


def _outside_container(runner, container_id: str, cgroup_text: str) -> dict[str, str]:
    """Return the controller lines whose path is not the container's cgroup."""
    suffix = f"/{runner.cgroup_parent}/{container_id}"
    paths = _controller_paths(cgroup_text)
    assert paths, cgroup_text
    return {name: path for name, path in paths.items() if not path.endswith(suffix)}


def _init_cgroups(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def _create_joining_late(
    runner, args: list[str], stdio: tuple[int, int, int] | None = None, **changes: Any
) -> tuple[str, int]:
    """Create a container whose init joins its cgroups after ready; return (id, pid)."""
    container_id = runner.new_id()
    bundle = runner.bundle(container_id, args, **changes)
    runner.ids.append(container_id)
    pid = runner.runtime.create(container_id, bundle, stdio=stdio, join_cgroups_after_ready=True)
    return container_id, pid


def _run_joining_late(runner, args: list[str], **changes: Any) -> tuple[int, str, str]:
    """Create, start and wait for such a container; return (status, stdout, stderr)."""
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    try:
        container_id, pid = _create_joining_late(
            runner, args, stdio=(0, stdout_write, stderr_write), **changes
        )
        os.close(stdout_write)
        os.close(stderr_write)
        stdout_write = stderr_write = -1
        runner.runtime.start(container_id)
        stdout, stderr = read_until_closed([stdout_read, stderr_read], 30.0)
    finally:
        for fd in (stdout_read, stderr_read, stdout_write, stderr_write):
            if fd >= 0:
                os.close(fd)
    return runner.wait(pid), stdout.decode(), stderr.decode()


@pytest.fixture
def cli(runner):
    return Cli(runner)


@pytest.fixture
def v1_only():
    if is_unified():
        pytest.skip("checks cgroup v1 hierarchies")


def test_processes_after_create_lists_init(runner, v1_only):
    container_id, pid = _create_joining_late(runner, ["sleep", "60"])
    assert runner.runtime.processes(container_id) == [pid]
    assert _outside_container(runner, container_id, _init_cgroups(pid)) == {}


def test_kill_all_after_create_kills_init(runner):
    container_id, pid = _create_joining_late(runner, ["sleep", "60"])
    runner.runtime.kill(container_id, signal.SIGKILL, all=True)
    assert runner.wait(pid) == 128 + signal.SIGKILL


def test_delete_after_create_removes_cgroups(runner):
    container_id, pid = _create_joining_late(runner, ["sleep", "60"])
    directories = runner.cgroup_directories(container_id)
    runner.runtime.delete(container_id, force=True)
    assert runner.wait(pid) == 128 + signal.SIGKILL
    assert [directory for directory in directories if directory.exists()] == []


def test_started_process_in_container_cgroups(runner, v1_only):
    status, stdout, stderr = _run_joining_late(runner, ["cat", "/proc/self/cgroup"])
    assert status == 0, stderr
    container_id = runner.ids[-1]
    assert _outside_container(runner, container_id, stdout) == {}


def test_started_process_under_pids_limit(runner):
    limits = {"resources": {"pids": {"limit": 3}}}
    script = "sleep 5 & sleep 5 & sleep 5 & wait"
    _, _, stderr = _run_joining_late(runner, ["sh", "-c", script], linux=limits)
    assert "can't fork" in stderr


def test_init_joins_before_start(runner, v1_only):
    container_id, pid = _create_joining_late(runner, ["sleep", "60"])
    runner.runtime.start(container_id)
    assert _outside_container(runner, container_id, _init_cgroups(pid)) == {}


def test_hooks_keep_parent_join(runner, v1_only):
    hook = {"path": "/bin/true", "args": ["true"]}
    container_id, pid = _create_joining_late(runner, ["sleep", "60"], hooks={"prestart": [hook]})
    # The parent moved the init in before ready, so it is there when create returns.
    assert _outside_container(runner, container_id, _init_cgroups(pid)) == {}


def test_cli_ps_after_create_lists_init(cli, runner, v1_only):
    bundle = cli.bundle("ps1", ["sleep", "60"])
    assert cli("create", "--bundle", str(bundle), "ps1").returncode == 0
    result = cli("ps", "--format", "json", "ps1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [runner.runtime.state("ps1")["pid"]]


def test_cli_kill_all_after_create(cli, runner):
    bundle = cli.bundle("kill1", ["sleep", "60"])
    assert cli("create", "--bundle", str(bundle), "kill1").returncode == 0
    pid = runner.runtime.state("kill1")["pid"]
    result = cli("kill", "--all", "kill1", "KILL")
    assert result.returncode == 0, result.stderr
    assert runner.wait(pid) == 128 + signal.SIGKILL


@pytest.fixture
def empty_cpuset(runner, v1_only):
    """A cpuset cgroup without CPUs, whose cgroup.procs rejects every process (ENOSPC)."""
    directory = Path("/sys/fs/cgroup/cpuset") / f"{runner.cgroup_parent}-empty"
    if not directory.parent.is_dir():
        pytest.skip("no cgroup v1 cpuset hierarchy at /sys/fs/cgroup/cpuset")
    directory.mkdir()
    try:
        yield directory
    finally:
        directory.rmdir()


def test_failed_join_stops_start(runner, monkeypatch, empty_cpuset):
    # The init is forked from this process, so it uses the patched manager.
    procs_files = V1Manager.procs_files
    failing = str(empty_cpuset / "cgroup.procs")
    monkeypatch.setattr(V1Manager, "procs_files", lambda self: [*procs_files(self), failing])
    stderr_read, stderr_write = os.pipe()
    try:
        container_id, pid = _create_joining_late(runner, ["true"], stdio=(0, 1, stderr_write))
        os.close(stderr_write)
        stderr_write = -1
        with pytest.raises(SystemFailure, match="init exited"):
            runner.runtime.start(container_id)
        assert runner.wait(pid) == 1
        message = os.read(stderr_read, 4096).decode()
    finally:
        os.close(stderr_read)
        if stderr_write >= 0:
            os.close(stderr_write)
    assert failing in message
    assert "ENOSPC" in message
