"""Create, start, state, kill and delete real containers with the runtime library."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound, SystemFailure
from ketch.runtime import Runtime

pytest_plugins = ["support.rootfs"]


def test_run_echo_output(runner):
    result = runner.run(["echo", "hello"])
    assert result.stdout == "hello\n"
    assert result.exit_code == 0


@pytest.mark.parametrize("code", [1, 3, 42])
def test_run_exit_code(runner, code):
    assert runner.run(["sh", "-c", f"exit {code}"]).exit_code == code


def test_run_stderr(runner):
    result = runner.run(["sh", "-c", "echo oops >&2"])
    assert result.stderr == "oops\n"
    assert result.stdout == ""


def test_state_created_running_stopped(runner):
    container_id, pid = runner.create(["sleep", "30"])
    assert runner.runtime.state(container_id)["status"] == "created"
    assert runner.runtime.state(container_id)["pid"] == pid
    runner.runtime.start(container_id)
    assert runner.runtime.state(container_id)["status"] == "running"
    runner.runtime.kill(container_id, signal.SIGKILL)
    assert runner.wait(pid) == 128 + signal.SIGKILL
    assert runner.runtime.state(container_id)["status"] == "stopped"


def test_state_fields(runner):
    container_id, pid = runner.create(["true"])
    state = runner.runtime.state(container_id)
    assert set(state) == {
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "owner",
        "annotations",
    }
    assert state["id"] == container_id
    assert state["rootfs"] == str(runner.rootfs)
    assert state["created"].endswith("Z")


def test_create_waits_for_start(runner):
    read_end, write_end = os.pipe()
    try:
        container_id, _ = runner.create(["echo", "started"], stdio=(0, write_end, 2))
        os.close(write_end)
        write_end = -1
        os.set_blocking(read_end, False)
        with pytest.raises(BlockingIOError):
            os.read(read_end, 100)
        runner.runtime.start(container_id)
        os.set_blocking(read_end, True)
        assert os.read(read_end, 100) == b"started\n"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_kill_by_signal(runner):
    container_id, pid = runner.create(["sleep", "30"])
    runner.runtime.start(container_id)
    # PID 1 of a pid namespace gets only the signals it handles; SIGKILL always arrives.
    runner.runtime.kill(container_id, signal.SIGKILL)
    assert runner.wait(pid) == 137


def test_kill_all(runner):
    container_id, pid = runner.create(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    runner.runtime.start(container_id)
    runner.runtime.kill(container_id, signal.SIGKILL, all=True)
    assert runner.wait(pid) == 137


def test_kill_stopped_conflict(runner):
    container_id, pid = runner.create(["true"])
    runner.runtime.start(container_id)
    runner.wait(pid)
    with pytest.raises(Conflict):
        runner.runtime.kill(container_id, signal.SIGTERM)


def test_delete_removes_state_and_cgroups(runner):
    container_id, pid = runner.create(["true"], linux={"resources": {"pids": {"limit": 10}}})
    directories = runner.cgroup_directories(container_id)
    assert all(directory.is_dir() for directory in directories)
    runner.runtime.start(container_id)
    runner.wait(pid)
    runner.runtime.delete(container_id)
    assert not (runner.root / "state" / container_id).exists()
    assert [d for d in directories if d.exists()] == []


def test_delete_running_conflict(runner):
    container_id, _ = runner.create(["sleep", "30"])
    runner.runtime.start(container_id)
    with pytest.raises(Conflict):
        runner.runtime.delete(container_id)


def test_delete_force_running(runner):
    container_id, pid = runner.create(["sleep", "30"])
    directories = runner.cgroup_directories(container_id)
    runner.runtime.start(container_id)
    runner.runtime.delete(container_id, force=True)
    assert runner.wait(pid) == 137
    assert [d for d in directories if d.exists()] == []


def test_delete_created_kills_init(runner):
    container_id, pid = runner.create(["true"])
    runner.runtime.delete(container_id)
    assert runner.wait(pid) == 137
    assert not (runner.root / "state" / container_id).exists()


def test_unknown_id_not_found(tmp_path):
    runtime = Runtime(tmp_path / "state")
    for call in (runtime.state, runtime.start, runtime.delete):
        with pytest.raises(NotFound, match="container nope does not exist"):
            call("nope")


def test_duplicate_id_conflict(runner):
    container_id, _ = runner.create(["true"])
    bundle = runner.root / "bundles" / container_id
    with pytest.raises(Conflict, match="already exists"):
        runner.runtime.create(container_id, bundle)
    assert runner.runtime.state(container_id)["status"] == "created"


def test_invalid_id_rejected(runner, tmp_path):
    with pytest.raises(InvalidArgument, match="invalid container id"):
        runner.runtime.create("../x", tmp_path)


def test_bad_config_names_field(runner):
    bundle = runner.bundle("bad", ["true"])
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = "true"
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidArgument, match="process.args"):
        runner.runtime.create("bad", bundle)
    assert not (runner.root / "state" / "bad").exists()


def test_missing_config_not_found(runner, tmp_path):
    with pytest.raises(NotFound, match="config.json not found"):
        runner.runtime.create("empty", tmp_path)


def test_executable_not_found(runner):
    container_id = runner.new_id()
    bundle = runner.bundle(container_id, ["no-such-program"])
    with pytest.raises(NotFound) as raised:
        runner.runtime.create(container_id, bundle)
    assert 'exec: "no-such-program": executable file not found in $PATH' in str(raised.value)


def test_failed_create_leaves_nothing(runner):
    container_id = runner.new_id()
    bundle = runner.bundle(
        container_id, ["no-such-program"], linux={"resources": {"memory": {"limit": 2**26}}}
    )
    with pytest.raises(NotFound):
        runner.runtime.create(container_id, bundle)
    assert not (runner.root / "state" / container_id).exists()
    leftovers = [p / container_id for p in _cgroup_parents(runner) if (p / container_id).exists()]
    assert leftovers == []


def test_start_twice_conflict(runner):
    container_id, pid = runner.create(["sleep", "30"])
    runner.runtime.start(container_id)
    with pytest.raises(Conflict):
        runner.runtime.start(container_id)


def test_start_after_init_died(runner):
    container_id, pid = runner.create(["true"])
    os.kill(pid, signal.SIGKILL)
    runner.wait(pid)
    with pytest.raises(Conflict, match="stopped"):
        runner.runtime.start(container_id)


def test_pid_file_written(runner, tmp_path):
    container_id = runner.new_id()
    bundle = runner.bundle(container_id, ["true"])
    runner.ids.append(container_id)
    pid = runner.runtime.create(container_id, bundle, pid_file=tmp_path / "init.pid")
    assert (tmp_path / "init.pid").read_text() == str(pid)


def test_list_shows_containers(runner):
    first, _ = runner.create(["true"])
    second, _ = runner.create(["true"])
    ids = [state["id"] for state in runner.runtime.list()]
    assert ids == [first, second]


def _cgroup_parents(runner) -> list[Path]:
    return runner.cgroup_parents()


def test_concurrent_starts_one_wins(runner):
    container_id, _ = runner.create(["sleep", "30"])
    outcomes = []

    def start() -> None:
        try:
            runner.runtime.start(container_id)
            outcomes.append("started")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(outcomes) == ["conflict", "started"]


def test_pid_file_unwritable_leaves_nothing(runner, tmp_path):
    container_id = runner.new_id()
    bundle = runner.bundle(container_id, ["true"])
    with pytest.raises(SystemFailure, match="pid"):
        runner.runtime.create(container_id, bundle, pid_file=tmp_path / "missing-dir" / "pid")
    assert not (runner.root / "state" / container_id).exists()
    assert [p / container_id for p in runner.cgroup_parents() if (p / container_id).exists()] == []
