"""pause, resume, update, ps, features, --log and the create options of ketch-runc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ketch.errors import Conflict, SystemFailure
from support.runtime_cli import Cli

pytest_plugins = ["support.rootfs"]


@pytest.fixture
def cli(runner):
    return Cli(runner)


@pytest.fixture
def running(runner):
    container_id, _ = runner.create(["sleep", "60"])
    runner.runtime.start(container_id)
    return container_id


def _ticks(runner, container_id: str) -> int:
    """Return the utime + stime of the container's init, in clock ticks."""
    pid = runner.runtime.state(container_id)["pid"]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_pause_sets_status(runner, running):
    runner.runtime.pause(running)
    assert runner.runtime.state(running)["status"] == "paused"


def test_pause_stops_processes(runner):
    container_id, _ = runner.create(["sh", "-c", "while :; do :; done"])
    runner.runtime.start(container_id)
    runner.runtime.pause(container_id)
    before = _ticks(runner, container_id)
    time.sleep(0.3)
    assert _ticks(runner, container_id) == before


def test_resume_sets_running(runner, running):
    runner.runtime.pause(running)
    runner.runtime.resume(running)
    assert runner.runtime.state(running)["status"] == "running"


def test_pause_created_conflict(runner):
    container_id, _ = runner.create(["true"])
    with pytest.raises(Conflict, match="created, not running"):
        runner.runtime.pause(container_id)


def test_resume_running_conflict(runner, running):
    with pytest.raises(Conflict, match="not paused"):
        runner.runtime.resume(running)


def test_delete_force_paused(runner, running):
    pid = runner.runtime.state(running)["pid"]
    runner.runtime.pause(running)
    runner.runtime.delete(running, force=True)
    assert runner.wait(pid) == 128 + signal.SIGKILL


def test_kill_all_paused(runner, running):
    pid = runner.runtime.state(running)["pid"]
    runner.runtime.pause(running)
    runner.runtime.kill(running, signal.SIGKILL, all=True)
    runner.runtime.resume(running)
    assert runner.wait(pid) == 128 + signal.SIGKILL


def test_update_memory_and_pids(runner, running):
    runner.runtime.update(running, {"memory": {"limit": 64 << 20}, "pids": {"limit": 20}})
    directories = runner.cgroup_directories(running)
    memory = next(d for d in directories if (d / "memory.limit_in_bytes").exists())
    pids = next(d for d in directories if (d / "pids.max").exists())
    assert (memory / "memory.limit_in_bytes").read_text() == f"{64 << 20}\n"
    assert (pids / "pids.max").read_text() == "20\n"


def test_update_invalid_names_field(runner, running):
    with pytest.raises(Exception, match="linux.resources.cpu.shares"):
        runner.runtime.update(running, {"cpu": {"shares": 1}})


def test_processes_lists_init(runner, running):
    assert runner.runtime.processes(running) == [runner.runtime.state(running)["pid"]]


def test_cli_pause_resume(cli, running):
    assert cli("pause", running).returncode == 0
    assert json.loads(cli("state", running).stdout)["status"] == "paused"
    assert cli("resume", running).returncode == 0
    assert json.loads(cli("state", running).stdout)["status"] == "running"


def test_cli_update_flags(cli, runner, running):
    assert cli("update", "--memory", "32m", running).returncode == 0
    directories = runner.cgroup_directories(running)
    memory = next(d for d in directories if (d / "memory.limit_in_bytes").exists())
    assert (memory / "memory.limit_in_bytes").read_text() == f"{32 << 20}\n"


def test_cli_update_resources_file(cli, runner, running, tmp_path):
    resources = tmp_path / "resources.json"
    resources.write_text(json.dumps({"pids": {"limit": 33}}))
    assert cli("update", "--resources", str(resources), running).returncode == 0
    pids = next(d for d in runner.cgroup_directories(running) if (d / "pids.max").exists())
    assert (pids / "pids.max").read_text() == "33\n"


def test_cli_update_nothing_error(cli, running):
    result = cli("update", running)
    assert result.returncode == 1
    assert "--resources" in result.stderr


def test_cli_ps_json(cli, runner, running):
    result = cli("ps", "--format", "json", running)
    assert json.loads(result.stdout) == [runner.runtime.state(running)["pid"]]


def test_cli_ps_table(cli, runner, running):
    lines = cli("ps", running).stdout.splitlines()
    assert lines[0].split()[:2] == ["UID", "PID"]
    assert len(lines) == 2
    assert "sleep 60" in lines[1]


def test_cli_list_json(cli, running):
    listed = json.loads(cli("list", "--format", "json").stdout)
    assert [entry["id"] for entry in listed] == [running]


def test_cli_kill_all(cli, runner, running):
    pid = runner.runtime.state(running)["pid"]
    assert cli("kill", "--all", running, "KILL").returncode == 0
    assert runner.wait(pid) == 128 + signal.SIGKILL


def test_cli_features_shape(cli):
    features = json.loads(cli("features").stdout)
    assert features["ociVersionMin"] == "1.0.0"
    assert "mount" in features["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]
    assert features["linux"]["cgroup"]["v1"] is True
    assert features["linux"]["cgroup"]["systemd"] is False
    assert "rbind" in features["mountOptions"]


def test_cli_log_json_error(cli, tmp_path):
    log = tmp_path / "log.json"
    result = cli("--log", str(log), "--log-format", "json", "start", "missing")
    assert result.returncode == 1
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["level"] == "error"
    assert record["msg"] == "container missing does not exist"


def test_cli_debug_logs_steps(cli, tmp_path):
    log = tmp_path / "log.txt"
    bundle = cli.bundle("d1", ["true"])
    cli("--log", str(log), "--debug", "create", "--bundle", str(bundle), "d1")
    assert "level=debug" in log.read_text()
    assert "created container d1" in log.read_text()


def test_cli_systemd_cgroup_error(cli):
    result = cli("--systemd-cgroup", "state", "any")
    assert result.returncode == 1
    assert "--systemd-cgroup" in result.stderr


def test_cli_run_no_pivot(cli):
    bundle = cli.bundle("np", ["sh", "-c", "cat /etc/passwd >/dev/null && echo inside"])
    result = cli("run", "--no-pivot", "--bundle", str(bundle), "np")
    assert result.stdout == "inside\n"
    assert result.returncode == 0


def test_cli_run_preserve_fds(cli, runner, tmp_path):
    shared = tmp_path / "shared"
    shared.write_text("passed on\n")
    bundle = cli.bundle("pf", ["sh", "-c", "cat <&3; cat <&4 2>/dev/null || echo closed"])
    with open(shared) as handle:
        fd = handle.fileno()
        command = [sys.executable, "-m", "ketch.runtime.cli", "--root", str(cli.root)]
        command += ["run", "--preserve-fds", "1", "--bundle", str(bundle), "pf"]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=30,
            pass_fds=(3,),
            preexec_fn=lambda: os.dup2(fd, 3),
        )
    assert result.stdout == "passed on\nclosed\n", result.stderr


def test_create_preserve_fds_closed_rejected(runner):
    with pytest.raises(Exception, match="descriptor"):
        container_id = runner.new_id()
        bundle = runner.bundle(container_id, ["true"])
        runner.runtime.create(container_id, bundle, preserve_fds=4000)


def test_rlimit_above_hard_named(runner):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("RLIMIT_NOFILE has no hard limit here")
    rlimits = [{"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]
    with pytest.raises(SystemFailure) as raised:
        runner.create(["true"], process={"rlimits": rlimits})
    message = str(raised.value)
    assert f"RLIMIT_NOFILE to soft {hard + 1}, hard {hard + 1}" in message
    assert f"the hard limit here is {hard}" in message


def test_oom_score_adj_applied(runner):
    result = runner.run(["cat", "/proc/self/oom_score_adj"], process={"oomScoreAdj": 500})
    assert result.stdout == "500\n"


def test_oom_score_adj_lowering_named(runner):
    status = Path("/proc/self/status").read_text()
    effective = int(status.split("CapEff:")[1].split()[0], 16)
    if effective & (1 << 24):
        pytest.skip("this process has CAP_SYS_RESOURCE, so lowering is allowed")
    with pytest.raises(SystemFailure, match="process.oomScoreAdj to -900"):
        runner.create(["true"], process={"oomScoreAdj": -900})


def test_domainname_set(runner):
    result = runner.run(["cat", "/proc/sys/kernel/domainname"], domainname="example.test")
    assert result.stdout == "example.test\n"


def test_additional_gids_and_umask(runner):
    process = {"user": {"uid": 1000, "gid": 1000, "additionalGids": [2000], "umask": 0o027}}
    result = runner.run(["sh", "-c", "id -G; umask"], process=process)
    assert result.stdout.split() == ["1000", "2000", "0027"]
