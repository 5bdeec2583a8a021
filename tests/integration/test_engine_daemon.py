"""ketchd as a process: its pid file, socket, refusal of a second instance, clean stop on
SIGTERM with containers left running in the supervisor, and config errors.

Every ketchd here runs in a network namespace that the test makes, because at start
ketchd brings up its bridge and firewall table, which must not touch the host's network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.netns import NetworkNamespace, network_namespace
from support.raw_http import request

KETCHD = [sys.executable, "-m", "ketch.ketchd"]
READY_SECONDS = 20.0


@dataclass
class Daemon:
    root: Path
    namespace: NetworkNamespace
    process: subprocess.Popen[bytes]

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def socket_path(self) -> Path:
        return self.exec_root / "ketch.sock"

    def log(self) -> str:
        return (self.root / "ketchd.log").read_text(errors="replace")


def ketchd_command(root: Path, *extra: str) -> list[str]:
    config = root / "daemon.json"
    if not config.exists():
        config.write_text("{}")
    return [
        *KETCHD,
        "--config-file", str(config),
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "-H", f"unix://{root / 'exec' / 'ketch.sock'}",
        *extra,
    ]  # fmt: skip


def _wait_ready(daemon: Daemon) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise AssertionError(f"ketchd exited early:\n{daemon.log()}")
        if daemon.socket_path.exists():
            try:
                if request(daemon.socket_path, "GET", "/_ping").status == 200:
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"ketchd did not respond within {READY_SECONDS} s:\n{daemon.log()}")


def _alive(pid: int) -> bool:
    """Tell whether ``pid`` runs; a zombie waiting for its parent to reap it does not."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def _stop_pid_file(path: Path) -> None:
    if not path.exists():
        return
    text = path.read_text().strip()
    if not text.isdigit():
        return
    try:
        os.kill(int(text), signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _alive(int(text)):
            return
        time.sleep(0.05)
    os.kill(int(text), signal.SIGKILL)


@pytest.fixture
def namespace() -> Iterator[NetworkNamespace]:
    with network_namespace("ketchd") as made:
        yield made


@contextlib.contextmanager
def running_ketchd(root: Path, namespace: NetworkNamespace) -> Iterator[Daemon]:
    """Start ketchd on ``root`` in ``namespace`` and wait until it serves. On exit, stop it
    and its supervisor and delete ``root``."""
    command = namespace.command(ketchd_command(root))
    with open(root / "ketchd.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
    running = Daemon(root, namespace, process)
    try:
        _wait_ready(running)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _stop_pid_file(root / "exec" / "supervisor.pid")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(namespace: NetworkNamespace) -> Iterator[Daemon]:
    root = Path(tempfile.mkdtemp(prefix="ketchd-", dir="/tmp"))
    with running_ketchd(root, namespace) as running:
        yield running


def test_daemon_pid_file(daemon: Daemon) -> None:
    pid_file = daemon.exec_root / "ketchd.pid"
    assert pid_file.read_text().strip() == str(daemon.process.pid)


def test_daemon_socket_mode(daemon: Daemon) -> None:
    mode = daemon.socket_path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def test_daemon_serves_version(daemon: Daemon) -> None:
    reply = request(daemon.socket_path, "GET", "/version")
    assert reply.status == 200
    assert reply.json()["ApiVersion"] == "1.45"


def test_daemon_database_created(daemon: Daemon) -> None:
    assert (daemon.root / "data" / "ketch.db").is_file()


def test_daemon_second_instance_refused(daemon: Daemon) -> None:
    other_socket = f"unix://{daemon.root / 'other.sock'}"
    command = ketchd_command(daemon.root)
    command[command.index("-H") + 1] = other_socket
    result = subprocess.run(
        daemon.namespace.command(command), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert f"ketchd is already running with pid {daemon.process.pid}" in result.stderr


def test_daemon_shared_data_root_rejected(daemon: Daemon, tmp_path: Path) -> None:
    # Its own exec root and socket, but the running daemon's data root.
    command = ketchd_command(daemon.root)
    command[command.index("--exec-root") + 1] = str(tmp_path / "exec")
    command[command.index("-H") + 1] = f"unix://{tmp_path / 'other.sock'}"

    result = subprocess.run(
        daemon.namespace.command(command), capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 1
    assert f"ketchd is already running with pid {daemon.process.pid}" in result.stderr
    assert str(daemon.root / "data" / "ketchd.pid") in result.stderr
    # The rejected daemon released its exec root's pid file and started no supervisor.
    assert not (tmp_path / "exec" / "ketchd.pid").exists()
    assert not (tmp_path / "exec" / "supervisor.pid").exists()


def test_daemon_sigterm_stops_cleanly(daemon: Daemon) -> None:
    supervisor_pid = int((daemon.exec_root / "supervisor.pid").read_text().strip())
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
    assert not (daemon.exec_root / "ketchd.pid").exists()
    assert not daemon.socket_path.exists()
    # The supervisor, and so the containers, outlive ketchd.
    os.kill(supervisor_pid, 0)


def test_daemon_create_unknown_image_404(daemon: Daemon) -> None:
    body = {"Image": "busybox", "Cmd": ["true"]}
    reply = request(daemon.socket_path, "POST", "/containers/create?name=kept", body)
    assert reply.status == 404
    assert reply.json()["message"] == "No such image: busybox:latest"


# The network table as the first schema made it, before columns such as ``created``.
FIRST_NETWORK_SCHEMA = """
CREATE TABLE network_networks (
    id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, driver TEXT NOT NULL,
    subnet TEXT NOT NULL, gateway TEXT NOT NULL, bridge TEXT NOT NULL
);
"""


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_daemon_old_database_network_ls(namespace: NetworkNamespace, tmp_path: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="ketchd-", dir="/tmp"))
    (root / "data").mkdir()
    db = sqlite3.connect(root / "data" / "ketch.db")
    db.executescript(FIRST_NETWORK_SCHEMA)
    row = ("a" * 64, "old", "bridge", "10.213.0.0/24", "10.213.0.1", "br-aaaaaaaaaaaa")
    db.execute("INSERT INTO network_networks VALUES (?, ?, ?, ?, ?, ?)", row)
    db.commit()
    db.close()

    with running_ketchd(root, namespace) as running:
        env = dict(
            os.environ,
            DOCKER_HOST=f"unix://{running.socket_path}",
            DOCKER_CONFIG=str(tmp_path / "docker"),
        )
        listed = subprocess.run(
            ["docker", "network", "ls", "--format", "{{.Name}} {{.CreatedAt}}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert listed.returncode == 0, listed.stderr
    created = dict(line.split(" ", 1) for line in listed.stdout.splitlines())
    assert created["old"].startswith("20")


def test_daemon_bad_config_exits_1(namespace: NetworkNamespace, tmp_path: Path) -> None:
    (tmp_path / "daemon.json").write_text('{"colour": "blue"}')
    command = namespace.command(ketchd_command(tmp_path))
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "unknown key 'colour'" in result.stderr
