"""``ketch-runc`` behind containerd 1.6, through ``ctr run --runc-binary``.

A private containerd runs in a network namespace made for the module, with its own root,
state, socket and a config that turns the CRI plugin off. ``ctr run --rootfs`` runs
containers straight from the busybox test rootfs, so no image is needed, and each one gets
a relative cgroup path so that its cgroups go under the test process's own. containerd
starts containerd-shim-runc-v2, which calls ketch-runc with runc's command line.
containerd is stopped by its pid, and the cgroup parent is removed after.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cgroups import remove_cgroup_trees
from support.netns import network_namespace
from support.rootfs import make_busybox_rootfs

CONTAINERD = Path("/usr/bin/containerd")
CTR = Path("/usr/bin/ctr")
KETCH_RUNC = Path(sys.executable).parent / "ketch-runc"
READY_TIMEOUT = 60.0
NAMESPACE = "ketch-test"

CONFIG = """version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{root}/containerd.sock"

[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
"""


class Containerd:
    """A private containerd and the ctr command line for it."""

    def __init__(self, root: Path, rootfs: Path, cgroup_parent: str) -> None:
        self.root = root
        self.rootfs = rootfs
        self.cgroup_parent = cgroup_parent
        self.socket = root / "containerd.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = open(root / "containerd.log", "wb")

    def start(self, command_prefix: list[str]) -> None:
        config = self.root / "config.toml"
        config.write_text(CONFIG.format(root=self.root))
        self.process = subprocess.Popen(
            [*command_prefix, str(CONTAINERD), "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited early: {self.log_text()}")
            if self.socket.exists() and self.ctr("version", timeout=30).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"containerd did not respond in {READY_TIMEOUT} s: {self.log_text()}")

    def ctr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        command = [str(CTR), "--address", str(self.socket), "--namespace", NAMESPACE, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def run_options(self, container_id: str, runtime: Path = KETCH_RUNC) -> list[str]:
        """Return the ``ctr run`` options that put ``container_id`` on ``runtime``."""
        return [
            "--rootfs",
            "--runc-binary", str(runtime),
            "--cgroup", f"{self.cgroup_parent}/{container_id}",
            # Without an image, ctr sets no PATH, and runc finds no command without one.
            "--env", "PATH=/bin",
        ]  # fmt: skip

    def run(
        self, container_id: str, *command: str, runtime: Path = KETCH_RUNC
    ) -> subprocess.CompletedProcess[str]:
        return self.ctr(
            "run", "--rm", *self.run_options(container_id, runtime), str(self.rootfs),
            container_id,
            *command,
        )  # fmt: skip

    def log_text(self) -> str:
        return (self.root / "containerd.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop containerd by its pid (nsenter execs it, so the pid is containerd's)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    if not CONTAINERD.exists() or not CTR.exists():
        pytest.skip("containerd is not installed (/usr/bin/containerd and /usr/bin/ctr)")
    rootfs = make_busybox_rootfs(tmp_path_factory.mktemp("containerd-rootfs") / "rootfs")
    # A short path, because containerd puts unix sockets under its root and state.
    root = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    cgroup_parent = f"ketch-callers-{secrets.token_hex(4)}"
    daemon = Containerd(root, rootfs, cgroup_parent)
    with network_namespace("ketch-containerd") as namespace:
        try:
            daemon.start(["nsenter", f"--net={namespace.path}"])
            yield daemon
        finally:
            daemon.stop()
            for directory in ("state", "root"):
                subprocess.run(["umount", "-R", "-l", str(root / directory)], capture_output=True)
            remove_cgroup_trees(cgroup_parent)
            shutil.rmtree(root, ignore_errors=True)


def test_ctr_run_echo(containerd):
    result = containerd.run("echo1", "echo", "hi")
    assert result.returncode == 0, result.stderr + containerd.log_text()
    assert result.stdout == "hi\n"


def test_ctr_run_exit_code(containerd):
    result = containerd.run("exit1", "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr


def test_ctr_run_removes_container(containerd):
    containerd.run("gone1", "true")
    assert "gone1" not in containerd.ctr("containers", "list", "--quiet").stdout.split()


def test_ctr_detached_exec_kill(containerd):
    options = containerd.run_options("detached1")
    started = containerd.ctr(
        "run", "--detach", *options, str(containerd.rootfs), "detached1", "sleep", "300"
    )
    try:
        assert started.returncode == 0, started.stderr + containerd.log_text()
        tasks = containerd.ctr("tasks", "list").stdout
        assert "RUNNING" in tasks
        executed = containerd.ctr(
            "tasks", "exec", "--exec-id", "probe", "detached1", "sh", "-c", "echo in-exec"
        )
        assert executed.stdout == "in-exec\n", executed.stderr
        killed = containerd.ctr("tasks", "kill", "--signal", "SIGKILL", "detached1")
        assert killed.returncode == 0, killed.stderr
    finally:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            deleted = containerd.ctr("tasks", "delete", "detached1")
            if deleted.returncode == 0 or "not found" in deleted.stderr:
                break
            containerd.ctr("tasks", "kill", "--signal", "SIGKILL", "detached1")
            time.sleep(0.2)
        containerd.ctr("containers", "delete", "detached1")


def test_ctr_run_echo_runc(containerd):
    result = containerd.run("echo2", "echo", "hi", runtime=Path("/usr/sbin/runc"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
