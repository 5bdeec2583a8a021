"""The engine's container routes through the real docker CLI against a real ketchd.

One ketchd per module (see support.daemon). Every test names its containers so that a
failure points at one, and the fixture removes them all at the end.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from support.daemon import KetchDaemon

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


def docker_ok(daemon: KetchDaemon, *args: str, timeout: float = 60) -> str:
    result = daemon.docker(*args, timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def wait_for_status(daemon: KetchDaemon, name: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = docker_ok(daemon, "inspect", "--format", "{{.State.Status}}", name).strip()
        if current == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"container {name} did not reach {status} within {timeout} s")


def run_to_exit(daemon: KetchDaemon, name: str, script: str, *options: str) -> None:
    docker_ok(daemon, "run", "-d", "--name", name, *options, "busybox", "sh", "-c", script)
    docker_ok(daemon, "wait", name)


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


# Exec


def test_exec_prints_output(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "exec-target", "busybox", "sleep", "300")
    result = daemon.docker("exec", "exec-target", "sh", "-c", "echo out; echo err >&2")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_exec_exit_code(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "exec-code", "busybox", "sleep", "300")
    result = daemon.docker("exec", "exec-code", "sh", "-c", "exit 5")
    assert result.returncode == 5


def test_exec_sees_container_pid_namespace(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "exec-ns", "busybox", "sleep", "300")
    output = docker_ok(daemon, "exec", "exec-ns", "cat", "/proc/1/cmdline")
    assert output == "sleep\x00300\x00"


def test_exec_env_user_workdir(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "exec-opts", "-e", "A=1", "busybox", "sleep", "300")
    output = docker_ok(
        daemon, "exec", "-e", "B=2", "-u", "nobody", "-w", "/tmp", "exec-opts",
        "sh", "-c", 'echo "$A $B $(id -u) $(pwd)"',
    )  # fmt: skip
    assert output == "1 2 65534 /tmp\n"


def test_exec_stdin(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "exec-stdin", "busybox", "sleep", "300")
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(daemon.root / "docker"))
    result = subprocess.run(
        ["docker", "exec", "-i", "exec-stdin", "tr", "a-z", "A-Z"],
        input="hello stdin\n", capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.stdout == "HELLO STDIN\n", result.stderr


def test_exec_tty(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "exec-tty", "busybox", "sleep", "300")
    output = run_in_pty(daemon, ["docker", "exec", "-t", "exec-tty", "sh", "-c", "tty; stty size"])
    lines = output.replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "24 80"


def test_exec_not_running_fails(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "create", "--name", "exec-created", "busybox", "true")
    result = daemon.docker("exec", "exec-created", "true")
    assert result.returncode != 0
    assert "is not running" in result.stderr


def test_exec_inspect_after_exit(daemon: KetchDaemon) -> None:
    import docker

    docker_ok(daemon, "run", "-d", "--name", "exec-inspect", "busybox", "sleep", "300")
    client = docker.DockerClient(base_url=daemon.host)
    try:
        exec_id = client.api.exec_create("exec-inspect", ["sh", "-c", "exit 3"])["Id"]
        client.api.exec_start(exec_id)
        inspected = client.api.exec_inspect(exec_id)
    finally:
        client.close()
    assert inspected["ExitCode"] == 3
    assert inspected["Running"] is False


def run_in_pty(
    daemon: KetchDaemon, command: list[str], timeout: float = 60, keys: list[bytes] | None = None
) -> str:
    """Run ``command`` with a 24x80 pseudo-terminal as its stdio; return its output.

    Each of ``keys`` is typed half a second after the previous one (the first after one
    second).
    """
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(daemon.root / "docker"))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    pending = list(keys or [])
    next_key = time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline:
            if pending and time.monotonic() >= next_key:
                os.write(master, pending.pop(0))
                next_key = time.monotonic() + 0.5
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    break
                if not data:
                    break
                output += data
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    return output.decode(errors="replace")


# Attach, stdin and TTY containers


def test_run_interactive_stdin(daemon: KetchDaemon) -> None:
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(daemon.root / "docker"))
    result = subprocess.run(
        ["docker", "run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"],
        input="piped in\n", capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.stdout == "PIPED IN\n", result.stderr


def test_run_tty_interactive_shell(daemon: KetchDaemon) -> None:
    output = run_in_pty(
        daemon,
        [
            "docker",
            "run",
            "--rm",
            "-it",
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "tty; stty size; echo $TERM",
        ],
    )
    lines = output.replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "24 80"
    assert lines[2] == "xterm"


def test_tty_container_logs_raw(daemon: KetchDaemon) -> None:
    run_to_exit(daemon, "tty-logs", "echo on-a-tty", "-t")
    env = dict(os.environ, DOCKER_HOST=daemon.host, DOCKER_CONFIG=str(daemon.root / "docker"))
    result = subprocess.run(
        ["docker", "logs", "tty-logs"], capture_output=True, env=env, timeout=60
    )
    assert result.stdout == b"on-a-tty\r\n"


def test_attach_detach_keys(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "-it", "--name", "detachable", "busybox", "sh")
    output = run_in_pty(
        daemon, ["docker", "attach", "detachable"], keys=[b"echo still-here\r", b"\x10\x11"]
    )
    assert "still-here" in output
    assert docker_ok(daemon, "inspect", "--format", "{{.State.Running}}", "detachable") == (
        "true\n"
    )
    docker_ok(daemon, "rm", "-f", "detachable")


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


# HostConfig options


def test_bind_mount_read_only(daemon: KetchDaemon) -> None:
    source = daemon.root / "bind-source"
    source.mkdir(exist_ok=True)
    (source / "greeting").write_text("from the host\n")
    output = docker_ok(
        daemon, "run", "--rm", "-v", f"{source}:/data:ro", "busybox",
        "sh", "-c", "cat /data/greeting; touch /data/new 2>&1 || echo refused",
    )  # fmt: skip
    lines = output.splitlines()
    assert lines[0] == "from the host"
    assert lines[-1] == "refused"


def test_mount_tmpfs(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--tmpfs", "/scratch:size=1m", "busybox",
        "sh", "-c", "grep ' /scratch ' /proc/mounts",
    )  # fmt: skip
    assert output.split()[2] == "tmpfs"
    assert "size=1024k" in output


def test_cap_drop_and_add(daemon: KetchDaemon) -> None:
    script = "grep CapEff /proc/self/status"
    dropped = docker_ok(daemon, "run", "--rm", "--cap-drop", "ALL", "busybox", "sh", "-c", script)
    assert dropped.split()[1] == "0000000000000000"
    added = docker_ok(
        daemon, "run", "--rm", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "busybox",
        "sh", "-c", script,
    )  # fmt: skip
    assert int(added.split()[1], 16) == 1 << 12


def test_ulimit_nofile(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon,
        "run",
        "--rm",
        "--ulimit",
        "nofile=512:1024",
        "busybox",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn",
    )
    assert output.split() == ["512", "1024"]


def test_sysctl_and_shm_size(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", "--shm-size", "8m",
        "busybox", "sh", "-c", "cat /proc/sys/net/ipv4/ip_forward; df -k /dev/shm | tail -1",
    )  # fmt: skip
    lines = output.splitlines()
    assert lines[0] == "1"
    assert lines[1].split()[1] == "8192"


def test_add_host_and_dns(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--add-host", "db.local:10.1.2.3", "--dns", "10.9.9.9",
        "busybox", "sh", "-c", "grep db.local /etc/hosts; cat /etc/resolv.conf",
    )  # fmt: skip
    lines = output.splitlines()
    assert lines[0].split() == ["10.1.2.3", "db.local"]
    assert lines[1] == "nameserver 10.9.9.9"


def test_network_host(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--network", "host", "busybox", "readlink", "/proc/self/ns/net"
    )
    # ketchd runs in the test's network namespace, which is the "host" one it can give.
    assert output.strip() == os.readlink(f"/proc/{daemon.process.pid}/ns/net")


def test_privileged_sees_all_caps(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--privileged", "busybox", "grep", "CapEff", "/proc/self/status"
    )
    with open("/proc/self/status") as status:
        bounding = next(line for line in status if line.startswith("CapBnd:")).split()[1]
    assert output.split()[1] == bounding


def test_no_new_privileges(daemon: KetchDaemon) -> None:
    output = docker_ok(
        daemon, "run", "--rm", "--security-opt", "no-new-privileges", "busybox",
        "grep", "NoNewPrivs", "/proc/self/status",
    )  # fmt: skip
    assert output.split()[1] == "1"


def test_read_only_rootfs(daemon: KetchDaemon) -> None:
    result = daemon.docker("run", "--rm", "--read-only", "busybox", "touch", "/file")
    assert result.returncode == 1
    assert "Read-only file system" in result.stderr


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
