"""The engine's container routes through the real docker CLI against a real ketchd.

One ketchd per module (see support.daemon). Every test names its containers so that a
failure points at one, and the fixture removes them all at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from support.daemon import KetchDaemon, docker_ok, run_to_exit

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


def wait_for_status(daemon: KetchDaemon, name: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = docker_ok(daemon, "inspect", "--format", "{{.State.Status}}", name).strip()
        if current == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"container {name} did not reach {status} within {timeout} s")


# Logs


def test_logs_separates_streams(daemon: KetchDaemon) -> None:
    run_to_exit(daemon, "logs-streams", "echo out; echo err >&2")
    result = daemon.docker("logs", "logs-streams")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_logs_tail(daemon: KetchDaemon) -> None:
    run_to_exit(daemon, "logs-tail", "for n in 1 2 3 4 5; do echo $n; done")
    assert docker_ok(daemon, "logs", "--tail", "2", "logs-tail") == "4\n5\n"


def test_logs_timestamps(daemon: KetchDaemon) -> None:
    run_to_exit(daemon, "logs-times", "echo stamped")
    line = docker_ok(daemon, "logs", "-t", "logs-times")
    stamp, _, text = line.partition(" ")
    assert text == "stamped\n"
    assert len(stamp) == len("2026-01-02T03:04:05.123456789Z")


def test_logs_since_future_is_empty(daemon: KetchDaemon) -> None:
    run_to_exit(daemon, "logs-since", "echo old")
    since = str(int(time.time()) + 3600)
    assert docker_ok(daemon, "logs", "--since", since, "logs-since") == ""


def test_logs_follow_until_exit(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--name", "logs-follow", "busybox",
        "sh", "-c", "for n in 1 2 3; do echo $n; sleep 0.3; done",
    )  # fmt: skip
    assert docker_ok(daemon, "logs", "-f", "logs-follow") == "1\n2\n3\n"


def test_logs_unknown_container(daemon: KetchDaemon) -> None:
    result = daemon.docker("logs", "no-such-container")
    assert result.returncode == 1
    assert "No such container: no-such-container" in result.stderr


def test_logs_default_rotation_in_inspect(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "logs-default", "busybox", "true")
    config = json.loads(
        docker_ok(daemon, "inspect", "--format", "{{json .HostConfig.LogConfig}}", "logs-default")
    )
    assert config == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}


def test_logs_rotate_by_max_size(daemon: KetchDaemon) -> None:
    run_to_exit(
        daemon, "logs-rotate", "seq 1 2000",
        "--log-opt", "max-size=10k", "--log-opt", "max-file=2",
    )  # fmt: skip
    log_path = Path(docker_ok(daemon, "inspect", "--format", "{{.LogPath}}", "logs-rotate").strip())
    files = sorted(p.name for p in log_path.parent.iterdir() if p.name.startswith(log_path.name))
    assert files == [log_path.name, log_path.name + ".1"]
    assert log_path.stat().st_size <= 10 * 1024
    lines = docker_ok(daemon, "logs", "logs-rotate").splitlines()
    assert lines[-1] == "2000"
    assert lines == [str(n) for n in range(int(lines[0]), 2001)]


def test_logs_rejects_unknown_log_opt(daemon: KetchDaemon) -> None:
    result = daemon.docker("create", "--log-opt", "colour=red", "busybox", "true")
    assert result.returncode == 1
    assert "unknown log opt 'colour'" in result.stderr


# Lifecycle


def test_pause_and_unpause(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "paused", "busybox", "sleep", "300")
    docker_ok(daemon, "pause", "paused")
    assert docker_ok(daemon, "inspect", "--format", "{{.State.Status}}", "paused") == "paused\n"
    assert "(Paused)" in docker_ok(daemon, "ps", "--filter", "name=paused")
    docker_ok(daemon, "unpause", "paused")
    assert docker_ok(daemon, "inspect", "--format", "{{.State.Paused}}", "paused") == "false\n"
    docker_ok(daemon, "rm", "-f", "paused")


def test_pause_stopped_container_fails(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "never-started", "busybox", "true")
    result = daemon.docker("pause", "never-started")
    assert result.returncode == 1
    assert "is not running" in result.stderr


def test_stop_paused_container(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "stop-paused", "busybox", "sleep", "300")
    docker_ok(daemon, "pause", "stop-paused")
    docker_ok(daemon, "stop", "-t", "1", "stop-paused")
    assert docker_ok(daemon, "inspect", "--format", "{{.State.Status}}", "stop-paused") == (
        "exited\n"
    )


def test_stop_with_signal(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--name", "stop-signal", "busybox",
        "sh", "-c", "trap 'exit 42' USR1; while true; do sleep 0.1; done",
    )  # fmt: skip
    time.sleep(0.3)  # let the shell install its trap
    docker_ok(daemon, "stop", "-s", "USR1", "-t", "30", "stop-signal")
    code = docker_ok(daemon, "inspect", "--format", "{{.State.ExitCode}}", "stop-signal")
    assert code == "42\n"


def test_restart_running_container(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "restarted", "busybox", "sleep", "300")
    first = docker_ok(daemon, "inspect", "--format", "{{.State.Pid}}", "restarted")
    docker_ok(daemon, "restart", "-t", "0", "restarted")
    second = docker_ok(daemon, "inspect", "--format", "{{.State.Pid}}", "restarted")
    assert second != first
    assert docker_ok(daemon, "inspect", "--format", "{{.State.Running}}", "restarted") == "true\n"
    docker_ok(daemon, "rm", "-f", "restarted")


def test_rename_container(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "old-name", "busybox", "true")
    docker_ok(daemon, "rename", "old-name", "new-name")
    assert docker_ok(daemon, "inspect", "--format", "{{.Name}}", "new-name") == "/new-name\n"
    assert daemon.docker("inspect", "old-name").returncode == 1


def test_rename_to_taken_name_fails(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "taken-a", "busybox", "true")
    docker_ok(daemon, "create", "--name", "taken-b", "busybox", "true")
    result = daemon.docker("rename", "taken-a", "taken-b")
    assert result.returncode == 1
    assert "is already in use" in result.stderr


def test_update_memory_and_pids(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "updated", "busybox", "sleep", "300")
    docker_ok(
        daemon, "update", "--memory", "64m", "--memory-swap", "-1", "--pids-limit", "40", "updated"
    )
    memory = docker_ok(daemon, "inspect", "--format", "{{.HostConfig.Memory}}", "updated")
    assert memory == f"{64 << 20}\n"
    pid = docker_ok(daemon, "inspect", "--format", "{{.State.Pid}}", "updated").strip()
    cgroup = cgroup_directory(int(pid), "memory")
    assert (cgroup / "memory.limit_in_bytes").read_text() == f"{64 << 20}\n"
    assert (cgroup_directory(int(pid), "pids") / "pids.max").read_text() == "40\n"
    docker_ok(daemon, "rm", "-f", "updated")


def test_update_cpus(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "cpu-updated", "busybox", "sleep", "300")
    docker_ok(daemon, "update", "--cpus", "0.5", "cpu-updated")
    pid = docker_ok(daemon, "inspect", "--format", "{{.State.Pid}}", "cpu-updated").strip()
    cgroup = cgroup_directory(int(pid), "cpu")
    assert (cgroup / "cpu.cfs_quota_us").read_text() == "50000\n"
    docker_ok(daemon, "rm", "-f", "cpu-updated")


def test_run_with_cpu_shares(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon,
        "run",
        "-d",
        "--name",
        "cpu-shares",
        "--cpu-shares",
        "512",
        "busybox",
        "sleep",
        "300",
    )
    pid = docker_ok(daemon, "inspect", "--format", "{{.State.Pid}}", "cpu-shares").strip()
    assert (cgroup_directory(int(pid), "cpu") / "cpu.shares").read_text() == "512\n"
    docker_ok(daemon, "rm", "-f", "cpu-shares")


def test_container_prune(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "prune-me", "--label", "prune=yes", "busybox", "true")
    docker_ok(daemon, "create", "--name", "keep-me", "busybox", "true")
    output = docker_ok(daemon, "container", "prune", "-f", "--filter", "label=prune=yes")
    assert "Total reclaimed space" in output
    assert daemon.docker("inspect", "prune-me").returncode == 1
    assert daemon.docker("inspect", "keep-me").returncode == 0


def test_events_since_replay(daemon: KetchDaemon) -> None:
    since = str(time.time() - 1)
    run_to_exit(daemon, "evented", "exit 7")
    until = str(time.time() + 1)
    output = docker_ok(
        daemon, "events", "--since", since, "--until", until,
        "--filter", "container=evented", "--format", "{{.Action}}",
    )  # fmt: skip
    assert output.split("\n")[:3] == ["create", "start", "die"]


def test_events_filter_by_event(daemon: KetchDaemon) -> None:
    since = str(time.time() - 1)
    run_to_exit(daemon, "evented-die", "true")
    until = str(time.time() + 1)
    output = docker_ok(
        daemon, "events", "--since", since, "--until", until,
        "--filter", "event=die", "--filter", "container=evented-die",
        "--format", "{{.Action}} {{.Actor.Attributes.exitCode}} {{.Actor.Attributes.name}}",
    )  # fmt: skip
    assert output == "die 0 evented-die\n"


def test_system_df(daemon: KetchDaemon) -> None:
    output = docker_ok(daemon, "system", "df")
    assert output.splitlines()[1].startswith("Images")


def cgroup_directory(pid: int, controller: str) -> Path:
    """Return the v1 cgroup directory of ``controller`` that process ``pid`` is in."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            mount = ",".join(sorted(controllers.split(","), reverse=controller == "cpu"))
            for candidate in (controllers, mount, controller):
                directory = Path("/sys/fs/cgroup") / candidate / path.lstrip("/")
                if directory.is_dir():
                    return directory
    raise AssertionError(f"process {pid} has no {controller} cgroup")


# Restart policies


def test_restart_on_failure_limit(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--name", "crasher", "--restart", "on-failure:2",
        "busybox", "sh", "-c", "exit 3",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = docker_ok(
            daemon, "inspect", "--format", "{{.RestartCount}} {{.State.Status}}", "crasher"
        ).strip()
        if state == "2 exited":
            break
        time.sleep(0.2)
    assert state == "2 exited"


def test_restart_always_brings_back(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--name", "comeback", "--restart", "always",
        "busybox", "sh", "-c", "sleep 0.5; exit 1",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    count = 0
    while time.monotonic() < deadline and count < 2:
        count = int(docker_ok(daemon, "inspect", "--format", "{{.RestartCount}}", "comeback"))
        time.sleep(0.2)
    assert count >= 2
    docker_ok(daemon, "stop", "-t", "1", "comeback")
    time.sleep(1)
    assert docker_ok(daemon, "inspect", "--format", "{{.State.Status}}", "comeback") == "exited\n"


def test_restart_with_rm_rejected(daemon: KetchDaemon) -> None:
    result = daemon.docker("run", "--rm", "--restart", "always", "busybox", "true")
    assert result.returncode == 125
    assert "conflicting options" in result.stderr.lower()


# Init


def test_init_is_pid_one(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--init", "busybox", "sh", "-c", "cat /proc/1/cmdline"
    )
    assert output.split("\x00")[:2] == ["/sbin/docker-init", "--"]


def test_init_reaps_orphans(daemon: KetchDaemon) -> None:
    script = "sh -c 'sleep 0.1 &' ; sleep 1; ps -o stat,comm | grep -c '^Z' || true"
    output = docker_ok(daemon, "run", "--rm", "--init", "busybox", "sh", "-c", script)
    assert output.strip() == "0"


def test_init_forwards_stop_signal(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--init", "--name", "init-stop", "busybox",
        "sh", "-c", "trap 'exit 9' TERM; while true; do sleep 0.1; done",
    )  # fmt: skip
    time.sleep(0.5)
    docker_ok(daemon, "stop", "-t", "20", "init-stop")
    code = docker_ok(daemon, "inspect", "--format", "{{.State.ExitCode}}", "init-stop")
    assert code == "9\n"


# Healthchecks


def wait_for_health(daemon: KetchDaemon, name: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    current = ""
    while time.monotonic() < deadline:
        current = docker_ok(daemon, "inspect", "--format", "{{.State.Health.Status}}", name)
        if current.strip() == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"container {name} is {current.strip()}, not {status}")


def test_health_becomes_healthy(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--name", "healthy", "--health-cmd", "echo ok",
        "--health-interval", "300ms", "busybox", "sleep", "300",
    )  # fmt: skip
    wait_for_health(daemon, "healthy", "healthy")
    log = json.loads(
        docker_ok(daemon, "inspect", "--format", "{{json .State.Health.Log}}", "healthy")
    )
    assert log[-1]["Output"] == "ok\n"
    assert "(healthy)" in docker_ok(daemon, "ps", "--filter", "name=healthy")
    docker_ok(daemon, "rm", "-f", "healthy")


def test_health_becomes_unhealthy(daemon: KetchDaemon) -> None:
    since = str(time.time() - 1)
    docker_ok(
        daemon, "run", "-d", "--name", "unhealthy", "--health-cmd", "exit 1",
        "--health-interval", "200ms", "--health-retries", "2", "busybox", "sleep", "300",
    )  # fmt: skip
    wait_for_health(daemon, "unhealthy", "unhealthy")
    streak = docker_ok(
        daemon, "inspect", "--format", "{{.State.Health.FailingStreak}}", "unhealthy"
    )
    assert int(streak) >= 2
    events = docker_ok(
        daemon, "events", "--since", since, "--until", str(time.time()),
        "--filter", "container=unhealthy", "--filter", "event=health_status",
        "--format", "{{.Action}}",
    )  # fmt: skip
    assert events.splitlines()[0] == "health_status: unhealthy"
    docker_ok(daemon, "rm", "-f", "unhealthy")


def test_health_timeout_fails_probe(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--name", "slow-probe", "--health-cmd", "sleep 5",
        "--health-interval", "200ms", "--health-timeout", "300ms", "--health-retries", "1",
        "busybox", "sleep", "300",
    )  # fmt: skip
    wait_for_health(daemon, "slow-probe", "unhealthy")
    log = json.loads(
        docker_ok(daemon, "inspect", "--format", "{{json .State.Health.Log}}", "slow-probe")
    )
    assert "exceeded timeout" in log[-1]["Output"]
    docker_ok(daemon, "rm", "-f", "slow-probe")


# Stats and top


def test_stats_no_stream(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "measured", "-m", "64m", "busybox", "sleep", "300")
    output = docker_ok(
        daemon, "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}", "measured"
    )
    name, usage, _, limit, pids = output.split()
    assert name == "measured"
    assert limit == "64MiB"
    assert pids == "1"
    docker_ok(daemon, "rm", "-f", "measured")


def test_stats_stream_api(daemon: KetchDaemon) -> None:
    import docker

    docker_ok(daemon, "run", "-d", "--name", "streamed", "busybox", "sleep", "300")
    client = docker.DockerClient(base_url=daemon.host)
    try:
        samples = client.api.stats("streamed", decode=True, stream=True)
        first = next(samples)
        second = next(samples)
    finally:
        client.close()
    assert (
        second["precpu_stats"]["cpu_usage"]["total_usage"]
        == (first["cpu_stats"]["cpu_usage"]["total_usage"])
    )
    assert second["cpu_stats"]["system_cpu_usage"] > first["cpu_stats"]["system_cpu_usage"]
    docker_ok(daemon, "rm", "-f", "streamed")


def test_top_lists_container_processes(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "topped", "busybox", "sleep", "300")
    output = docker_ok(daemon, "top", "topped")
    lines = output.splitlines()
    assert lines[0].split()[:3] == ["UID", "PID", "PPID"]
    assert len(lines) == 2
    assert lines[1].endswith("sleep 300")
    docker_ok(daemon, "rm", "-f", "topped")


# Copying files


def test_cp_from_container(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon,
        "run",
        "-d",
        "--name",
        "cp-source",
        "busybox",
        "sh",
        "-c",
        "echo inside > /tmp/note; sleep 300",
    )
    time.sleep(0.5)
    target = daemon.root / "copied-note"
    docker_ok(daemon, "cp", "cp-source:/tmp/note", str(target))
    assert target.read_text() == "inside\n"
    docker_ok(daemon, "rm", "-f", "cp-source")


def test_cp_directory_into_container(daemon: KetchDaemon) -> None:
    source = daemon.root / "cp-dir"
    (source / "sub").mkdir(parents=True, exist_ok=True)
    (source / "sub" / "file").write_text("deep\n")
    docker_ok(daemon, "run", "-d", "--name", "cp-target", "busybox", "sleep", "300")
    docker_ok(daemon, "cp", str(source), "cp-target:/tmp/")
    output = docker_ok(daemon, "exec", "cp-target", "cat", "/tmp/cp-dir/sub/file")
    assert output == "deep\n"
    docker_ok(daemon, "rm", "-f", "cp-target")


def test_cp_does_not_escape_through_symlink(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--name", "cp-escape", "busybox",
        "sh", "-c", "ln -s / /tmp/hostroot; sleep 300",
    )  # fmt: skip
    time.sleep(0.5)
    marker = daemon.root / "escape-marker"
    marker.write_text("host only\n")
    result = daemon.docker("cp", f"cp-escape:/tmp/hostroot{marker}", str(daemon.root / "got"))
    assert result.returncode != 0
    assert "Could not find the file" in result.stderr
    docker_ok(daemon, "rm", "-f", "cp-escape")


def test_cp_missing_path(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "cp-missing", "busybox", "true")
    result = daemon.docker("cp", "cp-missing:/no/such/file", str(daemon.root / "never"))
    assert result.returncode == 1
    assert "Could not find the file /no/such/file" in result.stderr


def test_export_contains_busybox(daemon: KetchDaemon) -> None:
    import tarfile

    docker_ok(daemon, "create", "--name", "exported", "busybox", "true")
    target = daemon.root / "exported.tar"
    docker_ok(daemon, "export", "-o", str(target), "exported")
    with tarfile.open(target) as tar:
        names = set(tar.getnames())
    assert "bin/busybox" in names


def test_inspect_mounts_and_exec_ids(daemon: KetchDaemon) -> None:
    source = daemon.root / "inspect-bind"
    source.mkdir(exist_ok=True)
    docker_ok(
        daemon,
        "run",
        "-d",
        "--name",
        "inspected",
        "-v",
        f"{source}:/data:ro",
        "busybox",
        "sleep",
        "300",
    )
    mounts = json.loads(docker_ok(daemon, "inspect", "--format", "{{json .Mounts}}", "inspected"))
    assert mounts == [
        {
            "Type": "bind", "Source": str(source), "Destination": "/data", "Mode": "ro",
            "RW": False, "Propagation": "rprivate",
        }
    ]  # fmt: skip
    docker_ok(daemon, "exec", "-d", "inspected", "sleep", "5")
    exec_ids = json.loads(
        docker_ok(daemon, "inspect", "--format", "{{json .ExecIDs}}", "inspected")
    )
    assert len(exec_ids) == 1
    docker_ok(daemon, "rm", "-f", "inspected")


def test_ps_size_and_info_paused(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon,
        "run",
        "-d",
        "--name",
        "sized",
        "busybox",
        "sh",
        "-c",
        "head -c 100000 /dev/zero > /big; sleep 300",
    )
    time.sleep(0.5)
    output = docker_ok(daemon, "ps", "--size", "--filter", "name=sized", "--format", "{{.Size}}")
    assert output.startswith("10")  # "102kB (virtual ...)" or similar
    docker_ok(daemon, "pause", "sized")
    paused = docker_ok(daemon, "info", "--format", "{{.ContainersPaused}}")
    assert int(paused) >= 1
    docker_ok(daemon, "rm", "-f", "sized")
