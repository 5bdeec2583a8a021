"""``ketch run`` in a subprocess against the API server with a fake engine."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ketch.errors import NotFound
from support.cli import run_ketch, served_engine
from support.fake_engine import ServedEngine

PULL_PROGRESS = [
    {"status": "Pulling from library/alpine", "id": "3.19"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Downloading", "progressDetail": {"current": 5, "total": 10}, "id": "a1b2c3d4e5f6"},
    {"status": "Pull complete", "progressDetail": {}, "id": "a1b2c3d4e5f6"},
    {"status": "Status: Downloaded newer image for alpine:3.19"},
]


@pytest.fixture
def served() -> Iterator[ServedEngine]:
    with served_engine() as served:
        yield served


def created_bodies(served: ServedEngine) -> list[tuple[dict, str | None]]:
    return [arguments for name, arguments in served.engine.calls if name == "create_container"]


def test_run_prints_output(served: ServedEngine) -> None:
    result = run_ketch("run", "--rm", "busybox", "echo", "hello", "world", host=served.host)
    assert result.stdout == "hello world\n"
    assert result.stderr == ""
    assert result.returncode == 0


def test_run_separates_stdout_and_stderr(served: ServedEngine) -> None:
    result = run_ketch("run", "busybox", "echo", "out", ";", "warn", "err", host=served.host)
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_run_exit_code_propagated(served: ServedEngine) -> None:
    result = run_ketch("run", "--rm", "busybox", "echo", "x", ";", "exit", "3", host=served.host)
    assert result.returncode == 3
    assert result.stdout == "x\n"


def test_run_rm_removes_container(served: ServedEngine) -> None:
    run_ketch("run", "--rm", "busybox", "exit", "0", host=served.host)
    assert served.engine.containers == {}


def test_run_without_rm_keeps_container(served: ServedEngine) -> None:
    run_ketch("run", "busybox", "exit", "0", host=served.host)
    assert [c.status for c in served.engine.containers.values()] == ["exited"]


def test_run_create_body(served: ServedEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    arguments = [
        "run", "--rm", "--name", "web", "-e", "A=1", "--env=B=two words", "-e", "FROM_CLI",
        "-e", "UNSET_HERE", "--network", "none", "busybox", "echo", "-e", "--rm",
    ]  # fmt: skip
    result = run_ketch(*arguments, host=served.host, env={"FROM_CLI": "yes"})
    assert result.stdout == "-e --rm\n", result.stderr
    body, name = created_bodies(served)[0]
    assert name == "web"
    assert body["Image"] == "busybox"
    assert body["Cmd"] == ["echo", "-e", "--rm"]
    assert body["Env"] == ["A=1", "B=two words", "FROM_CLI=yes", "UNSET_HERE"]
    assert body["HostConfig"] == {"AutoRemove": True, "NetworkMode": "none"}


def test_run_without_command_sends_null_cmd(served: ServedEngine) -> None:
    run_ketch("run", "-d", "busybox", host=served.host)
    body, _ = created_bodies(served)[0]
    assert body["Cmd"] is None
    assert body["HostConfig"]["NetworkMode"] == "default"


def test_run_pulls_missing_image_and_retries(served: ServedEngine) -> None:
    served.engine.pull_results["alpine:3.19"] = (PULL_PROGRESS, None)
    result = run_ketch("run", "--rm", "alpine:3.19", "echo", "pulled", host=served.host)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pulled\n"
    assert result.stderr.splitlines() == [
        "Unable to find image 'alpine:3.19' locally",
        "3.19: Pulling from library/alpine",
        "a1b2c3d4e5f6: Pulling fs layer",
        "a1b2c3d4e5f6: Pull complete",
        "Status: Downloaded newer image for alpine:3.19",
    ]
    assert len(created_bodies(served)) == 2


def test_run_pull_failure_exits_125(served: ServedEngine) -> None:
    missing = NotFound("manifest for nothing:latest not found: manifest unknown")
    served.engine.pull_results["nothing:latest"] = ([], missing)
    result = run_ketch("run", "--rm", "nothing", "true", host=served.host)
    assert result.returncode == 125
    assert result.stderr.splitlines() == [
        "Unable to find image 'nothing:latest' locally",
        "ketch: Error response from daemon: manifest for nothing:latest not found: "
        "manifest unknown",
    ]


def test_run_missing_executable_exits_127(served: ServedEngine) -> None:
    result = run_ketch("run", "--rm", "busybox", "no-such-command", host=served.host)
    assert result.returncode == 127
    assert 'exec: "no-such-command": executable file not found' in result.stderr
    assert served.engine.containers == {}


def test_run_detached_prints_id(served: ServedEngine) -> None:
    result = run_ketch("run", "-d", "--name", "sleeper", "busybox", "sleep", host=served.host)
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    assert len(container_id) == 64
    assert served.engine.containers[container_id].status == "running"


def test_run_name_conflict_exits_125(served: ServedEngine) -> None:
    run_ketch("run", "--name", "web", "busybox", "exit", "0", host=served.host)
    result = run_ketch("run", "--name", "web", "busybox", "exit", "0", host=served.host)
    assert result.returncode == 125
    assert result.stderr.startswith("ketch: Error response from daemon: Conflict.")


def test_run_prints_create_warnings(served: ServedEngine) -> None:
    served.engine.add_image("warn:latest")
    result = run_ketch("run", "--rm", "warn", "exit", "0", host=served.host)
    assert result.stderr == "WARNING: bridge networking is not implemented\n"


def test_run_unknown_flag_exits_125() -> None:
    result = run_ketch("run", "--bogus", "busybox", host="unix:///nonexistent.sock")
    assert result.returncode == 125
    assert result.stderr == "unknown flag: --bogus\nSee 'ketch run --help'.\n"


def test_run_unknown_shorthand_exits_125() -> None:
    result = run_ketch("run", "-iz", "busybox", host="unix:///nonexistent.sock")
    assert result.returncode == 125
    assert result.stderr.startswith("unknown shorthand flag: 'z' in -iz\n")


def test_run_without_image_exits_125() -> None:
    result = run_ketch("run", "--rm", host="unix:///nonexistent.sock")
    assert result.returncode == 125
    assert result.stderr.startswith('"ketch run" requires at least 1 argument.\n')


def test_run_daemon_unreachable_exits_125() -> None:
    result = run_ketch("run", "busybox", host="unix:///nonexistent/ketch.sock")
    assert result.returncode == 125
    assert result.stderr == (
        "ketch: Cannot connect to the ketch daemon at unix:///nonexistent/ketch.sock: "
        "No such file or directory. Is ketchd running?\n"
    )


def test_run_passes_signals_to_container(served: ServedEngine) -> None:
    command = [sys.executable, "-m", "ketch.cli.main", "-H", served.host, "run", "busybox", "sleep"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not catches_signal(process.pid, signal.SIGTERM):
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 137, stderr
    kills = [arguments for name, arguments in served.engine.calls if name == "kill_container"]
    assert [signal_name for _, signal_name in kills] == ["SIGTERM"]


def catches_signal(pid: int, number: int) -> bool:
    """Return whether a process has a handler for a signal (SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (number - 1)))
    return False
