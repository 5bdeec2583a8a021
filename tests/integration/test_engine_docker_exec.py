"""Exec, attach, stdin and TTY containers through the real docker CLI against a real ketchd.

One ketchd per module (see support.daemon). Every test names its containers so that a
failure points at one, and the fixture removes them all at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from support.daemon import KetchDaemon, docker_ok, run_to_exit
from support.terminal import run_in_terminal

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


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
    output, _ = run_in_terminal(command, env, timeout, keys)
    return output


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
