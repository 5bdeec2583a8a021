"""Live restore: ketchd killed with SIGKILL and started again while containers run.

The supervisor outlives ketchd, so the containers keep running and writing their logs,
and an exit that happens while ketchd is down is recorded by the supervisor and picked up
by the next ketchd.
"""

from __future__ import annotations

import shutil

import pytest

from support.daemon import KetchDaemon, docker_ok
from support.restart import restart_ketchd

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)


def restart_ketchd_after_sigkill(daemon: KetchDaemon, while_down: float = 0.0) -> None:
    restart_ketchd(daemon, while_down=while_down)


def test_live_restore_keeps_containers_and_logs(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "pull", "busybox")
    docker_ok(
        daemon, "run", "-d", "--name", "counter", "busybox",
        "sh", "-c", "n=0; while true; do n=$((n+1)); echo $n; sleep 0.05; done",
    )  # fmt: skip
    docker_ok(
        daemon, "run", "-d", "--name", "short-lived", "busybox",
        "sh", "-c", "sleep 1.5; echo bye; exit 17",
    )  # fmt: skip
    pid_before = docker_ok(daemon, "inspect", "--format", "{{.State.Pid}}", "counter")

    restart_ketchd_after_sigkill(daemon, while_down=2.5)

    state = docker_ok(daemon, "inspect", "--format", "{{.State.Status}} {{.State.Pid}}", "counter")
    assert state == f"running {pid_before.strip()}\n"
    exited = docker_ok(
        daemon, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "short-lived"
    )
    assert exited == "exited 17\n"
    assert docker_ok(daemon, "logs", "short-lived") == "bye\n"

    numbers = [int(line) for line in docker_ok(daemon, "logs", "counter").split()]
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) > 40  # written across the 2.5 s ketchd was down
    docker_ok(daemon, "rm", "-f", "counter")


def test_live_restore_wait_after_restart(daemon: KetchDaemon) -> None:
    docker_ok(daemon, "run", "-d", "--name", "waited", "busybox", "sh", "-c", "sleep 2; exit 4")
    restart_ketchd_after_sigkill(daemon)
    result = daemon.docker("wait", "waited")
    assert result.stdout == "4\n"


def test_live_restore_starts_always_policy(daemon: KetchDaemon) -> None:
    docker_ok(
        daemon, "run", "-d", "--name", "always-on", "--restart", "always", "busybox", "sleep", "300"
    )
    docker_ok(
        daemon,
        "run",
        "-d",
        "--name",
        "user-stopped",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "300",
    )
    docker_ok(daemon, "stop", "-t", "0", "user-stopped")
    restart_ketchd_after_sigkill(daemon)
    running = docker_ok(daemon, "inspect", "--format", "{{.State.Running}}", "always-on")
    assert running == "true\n"
    stopped = docker_ok(daemon, "inspect", "--format", "{{.State.Running}}", "user-stopped")
    assert stopped == "false\n"


def test_unfinished_create_is_removed(daemon: KetchDaemon) -> None:
    orphan = daemon.data_root / "containers" / ("f" * 64)
    (orphan / "bundle").mkdir(parents=True)
    (orphan / "bundle" / "config.json").write_text("{}")
    restart_ketchd_after_sigkill(daemon)
    assert not orphan.exists()
    assert "f" * 12 not in docker_ok(daemon, "ps", "-a", "--format", "{{.ID}}")
