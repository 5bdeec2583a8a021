"""Conformance, seen from outside: the lifecycle verbs, their errors and the state JSON."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

LONG_SLEEP = ["sleep", "300"]


def process_exists(pid: int) -> bool:
    """Return whether ``pid`` is alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_exists(pid):
            return True
        time.sleep(0.02)
    return False


def created(oci, args: list[str] = LONG_SLEEP, **changes) -> str:
    container_id, result = oci.create(args, **changes)
    assert result.returncode == 0, f"{oci.name}: {result.stderr}"
    return container_id


def running(oci, args: list[str] = LONG_SLEEP, **changes) -> str:
    container_id = created(oci, args, **changes)
    result = oci("start", container_id)
    assert result.returncode == 0, f"{oci.name}: {result.stderr}"
    return container_id


def test_state_created(oci):
    container_id = created(oci)
    state = oci.state(container_id)
    assert state["status"] == "created"
    assert state["id"] == container_id
    assert state["bundle"] == str(oci.workdir / "bundles" / container_id)
    assert state["ociVersion"].startswith("1.")
    assert process_exists(state["pid"])


def test_created_process_not_started(oci):
    marker = oci.rootfs / "tmp" / f"started-{oci.cgroup_parent}"
    container_id = created(oci, ["sh", "-c", f"touch /tmp/{marker.name}; sleep 300"])
    time.sleep(0.3)
    assert not marker.exists()
    oci("start", container_id)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists()
    marker.unlink()


def test_pid_file(oci, tmp_path):
    container_id, directory = oci.bundle(oci.config(LONG_SLEEP))
    pid_file = tmp_path / "init.pid"
    result = oci("create", "--bundle", str(directory), "--pid-file", str(pid_file), container_id)
    assert result.returncode == 0, result.stderr
    assert int(pid_file.read_text()) == oci.state(container_id)["pid"]


def test_state_running(oci):
    container_id = running(oci)
    assert oci.state(container_id)["status"] == "running"


def test_state_stopped(oci):
    container_id = running(oci, ["true"])
    oci.wait_for_status(container_id, "stopped")
    assert oci.state(container_id)["status"] == "stopped"


def test_start_running_fails(oci):
    container_id = running(oci)
    assert oci("start", container_id).returncode == 1


def test_start_stopped_fails(oci):
    container_id = running(oci, ["true"])
    oci.wait_for_status(container_id, "stopped")
    assert oci("start", container_id).returncode == 1


def test_kill_created(oci):
    container_id = created(oci)
    pid = oci.state(container_id)["pid"]
    assert oci("kill", container_id, "KILL").returncode == 0
    assert wait_until_gone(pid)


def test_kill_running_by_name_and_number(oci):
    first = running(oci)
    second = running(oci)
    assert oci("kill", first, "SIGKILL").returncode == 0
    assert oci("kill", second, "9").returncode == 0
    oci.wait_for_status(first, "stopped")
    oci.wait_for_status(second, "stopped")


def test_kill_default_is_term(oci):
    script = "trap 'echo term > /tmp/$HOSTNAME-signal; exit 0' TERM; while :; do sleep 1; done"
    hostname = oci.cgroup_parent
    container_id = running(oci, ["sh", "-c", script], hostname=hostname)
    assert oci("kill", container_id).returncode == 0
    oci.wait_for_status(container_id, "stopped")
    record = oci.rootfs / "tmp" / f"{hostname}-signal"
    assert record.read_text() == "term\n"
    record.unlink()


def test_kill_stopped_fails(oci):
    container_id = running(oci, ["true"])
    oci.wait_for_status(container_id, "stopped")
    assert oci("kill", container_id, "KILL").returncode == 1


def test_kill_all(oci):
    # Without a pid namespace the children outlive the init, so only --all stops them.
    namespaces = [{"type": kind} for kind in ("network", "ipc", "uts", "mount")]
    container_id = running(
        oci, ["sh", "-c", "sleep 300 & sleep 300 & wait"], linux={"namespaces": namespaces}
    )
    (pids_directory,) = [p for p in oci.cgroup_directories(container_id) if "pids" in p.parts]
    deadline = time.monotonic() + 30
    while len((pids_directory / "cgroup.procs").read_text().split()) < 3:
        assert time.monotonic() < deadline, "the children never started"
        time.sleep(0.02)
    assert oci("kill", "--all", container_id, "KILL").returncode == 0
    deadline = time.monotonic() + 30
    while (pids_directory / "cgroup.procs").read_text().split():
        assert time.monotonic() < deadline, "processes left in the cgroup"
        time.sleep(0.02)
    oci.wait_for_status(container_id, "stopped")


def test_delete_running_fails(oci):
    container_id = running(oci)
    assert oci("delete", container_id).returncode == 1
    assert oci.state(container_id)["status"] == "running"


def test_delete_created(oci):
    container_id = created(oci)
    pid = oci.state(container_id)["pid"]
    assert oci("delete", container_id).returncode == 0
    assert wait_until_gone(pid)
    assert oci("state", container_id).returncode == 1


def test_delete_stopped_removes_cgroups(oci):
    container_id = running(oci, ["true"])
    oci.wait_for_status(container_id, "stopped")
    assert oci("delete", container_id).returncode == 0
    assert oci.cgroup_directories(container_id) == []


def test_delete_force_running(oci):
    container_id = running(oci)
    pid = oci.state(container_id)["pid"]
    assert oci("delete", "--force", container_id).returncode == 0
    assert wait_until_gone(pid)
    assert oci("state", container_id).returncode == 1
    assert oci.cgroup_directories(container_id) == []


@pytest.mark.parametrize("verb", ["state", "start", "kill", "delete"])
def test_unknown_id_fails(oci, verb):
    result = oci(verb, "conformance-missing")
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_duplicate_id_fails(oci):
    container_id = created(oci)
    _, directory = oci.bundle(oci.config(["true"]), container_id="again")
    result = oci("create", "--bundle", str(directory), container_id)
    assert result.returncode == 1
    assert oci.state(container_id)["status"] == "created"


def test_missing_bundle_fails(oci, tmp_path):
    result = oci("create", "--bundle", str(tmp_path / "nothing"), "conformance-nobundle")
    assert result.returncode == 1
    assert oci("state", "conformance-nobundle").returncode == 1


def test_bad_config_leaves_nothing(oci):
    config = oci.config(["true"])
    config["process"]["args"] = []
    container_id, directory = oci.bundle(config)
    result = oci("create", "--bundle", str(directory), container_id)
    assert result.returncode == 1
    assert oci("state", container_id).returncode == 1
    assert oci.cgroup_directories(container_id) == []


def test_missing_executable_leaves_nothing(oci):
    container_id, result = oci.create(["/bin/conformance-not-there"])
    if result.returncode == 0:
        # runc reports a missing executable at start, not at create.
        assert oci("start", container_id).returncode == 1
        oci("delete", "--force", container_id)
    assert oci("state", container_id).returncode == 1
    assert oci.cgroup_directories(container_id) == []


def test_list_json(oci):
    first = created(oci)
    second = running(oci)
    result = oci("list", "--format", "json")
    listed = {entry["id"]: entry["status"] for entry in json.loads(result.stdout)}
    assert listed == {first: "created", second: "running"}


def test_run_exit_status(oci):
    result = oci.run(["sh", "-c", "exit 7"])
    assert result.returncode == 7


def test_run_removes_container(oci):
    oci.run(["true"])
    assert oci("state", oci.ids[-1]).returncode == 1
    assert oci.cgroup_directories(oci.ids[-1]) == []


def test_spec_matches_runc(oci, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    subprocess.run(["/usr/sbin/runc", "spec", "--bundle", str(reference)], check=True)
    written = tmp_path / "written"
    written.mkdir()
    assert oci("spec", "--bundle", str(written)).returncode == 0
    expected = json.loads((reference / "config.json").read_text())
    assert json.loads((written / "config.json").read_text()) == expected


def test_init_killed_outside_is_stopped(oci):
    container_id = running(oci)
    os.kill(oci.state(container_id)["pid"], 9)
    oci.wait_for_status(container_id, "stopped")
    assert oci("delete", container_id).returncode == 0
