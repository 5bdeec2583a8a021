"""A private Debian dockerd 20.10 for tests: started in a network namespace the test made,
with bridge, iptables and forwarding off, private data root, exec root, pid file and socket,
a relative cgroup parent, and ketch-runc added as the runtime ``ketch``. It is stopped by its
pid, and its containerd after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from support.netns import NetworkNamespace
from support.rootfs import make_busybox_rootfs

DOCKERD = Path("/usr/sbin/dockerd")
KETCH_RUNC = Path(sys.executable).parent / "ketch-runc"
READY_TIMEOUT = 90.0


class Dockerd:
    """A private dockerd, started in ``namespace``, listening on a socket in ``root``."""

    def __init__(self, root: Path, namespace: NetworkNamespace, cgroup_parent: str) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.pid_file = root / "dockerd.pid"
        self.exec_root = root / "exec"
        self.environment = dict(os.environ, DOCKER_CONFIG=str(root / "client-config"))
        command = [
            str(DOCKERD),
            "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--ip-masq=false", "--bridge=none",
            "--data-root", str(root / "data"), "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pid_file), "--host", f"unix://{self.socket}",
            "--cgroup-parent", cgroup_parent,
            "--add-runtime", f"ketch={KETCH_RUNC}",
        ]  # fmt: skip
        self.log = open(root / "dockerd.log", "wb")
        self.process = subprocess.Popen(
            namespace.command(command), stdout=self.log, stderr=subprocess.STDOUT
        )

    def docker(
        self, *args: str, timeout: float = 120.0, **run_options: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this dockerd, with its output captured as text.

        ``run_options`` are further keyword arguments of subprocess.run (``check=True``,
        for example), and replace the defaults that they name.
        """
        options: dict[str, Any] = {
            "capture_output": True,
            "text": True,
            "timeout": timeout,
            "env": self.environment,
        }
        options.update(run_options)
        return subprocess.run(["docker", "--host", f"unix://{self.socket}", *args], **options)

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited early: {self.log_text()}")
            if self.socket.exists() and self.docker("version", timeout=30).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not respond in {READY_TIMEOUT} s: {self.log_text()}")

    def log_text(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop dockerd by its pid, then its containerd if that outlived it."""
        containerd_pid_file = self.exec_root / "containerd" / "containerd.pid"
        containerd_pid = read_pid(containerd_pid_file)
        pid = read_pid(self.pid_file) or self.process.pid
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if containerd_pid is not None:
            stop_process(containerd_pid)
        self.log.close()


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def stop_process(pid: int, timeout: float = 30.0) -> None:
    """Send SIGTERM to ``pid``, then SIGKILL if it is still alive after ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def make_busybox_tarball(workdir: Path) -> Path:
    """Write a busybox root filesystem archive for ``docker import`` and ``podman import``."""
    rootfs = make_busybox_rootfs(workdir / "busybox-rootfs")
    tarball = workdir / "busybox.tar"
    with tarfile.open(tarball, "w") as archive:
        archive.add(rootfs, arcname=".")
    return tarball


def import_busybox(dockerd: Dockerd, workdir: Path) -> Path:
    """Import a busybox rootfs into dockerd as busybox:latest and return its tarball, which
    other engines can import too."""
    tarball = make_busybox_tarball(workdir)
    result = dockerd.docker("import", str(tarball), "busybox:latest")
    assert result.returncode == 0, result.stderr
    return tarball
