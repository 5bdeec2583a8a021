"""The engine's container routes through the real docker CLI against a real ketchd.

One ketchd per module (see support.daemon). Every test names its containers so that a
failure points at one, and the fixture removes them all at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.daemon import KetchDaemon, daemon_fixture

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


@pytest.fixture(scope="module")
def daemon() -> Iterator[KetchDaemon]:
    yield from daemon_fixture()


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
