"""``ketch-runc`` behind Debian's dockerd 20.10, added with ``--add-runtime``.

dockerd runs in a network namespace made for the module, with bridge, iptables and
forwarding off and private data root, exec root, pid file and socket, so it touches nothing
of the host's. Its cgroup parent is relative, so its containers' cgroups go under the test
process's own. busybox comes in with ``docker import`` from the test rootfs, so
nothing is pulled. dockerd is stopped by its pid, and its cgroup parent is removed after.
dockerd reaches ketch-runc through its containerd and containerd-shim-runc-v2, which
call it with runc's command line.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.netns import NetworkNamespace, network_namespace
from support.rootfs import make_busybox_rootfs

DOCKERD = Path("/usr/sbin/dockerd")
KETCH_RUNC = Path(sys.executable).parent / "ketch-runc"
READY_TIMEOUT = 90.0
RUN = ["run", "--runtime", "ketch"]


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

    def docker(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "--host", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment,
        )

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


def own_cgroup_directories(relative: str) -> list[Path]:
    """Return ``relative`` below this process's cgroup in every hierarchy where it exists."""
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, own_path = line.split(":", 2)
        if controllers == "":
            mount = Path("/sys/fs/cgroup/unified")
        elif controllers.startswith("name="):
            mount = Path("/sys/fs/cgroup") / controllers.removeprefix("name=")
        else:
            mount = Path("/sys/fs/cgroup") / controllers.split(",")[0]
        candidate = mount / own_path.lstrip("/") / relative
        if candidate.is_dir():
            found.append(candidate)
    return found


def remove_cgroup_trees(relative: str) -> None:
    for directory in own_cgroup_directories(relative):
        for parent, _, _ in sorted(os.walk(directory), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(parent)
            except OSError:
                pass


def import_busybox(dockerd: Dockerd, workdir: Path) -> None:
    rootfs = make_busybox_rootfs(workdir / "busybox-rootfs")
    tarball = workdir / "busybox.tar"
    with tarfile.open(tarball, "w") as archive:
        archive.add(rootfs, arcname=".")
    result = dockerd.docker("import", str(tarball), "busybox:latest")
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    if not DOCKERD.exists() or shutil.which("docker") is None:
        pytest.skip("docker.io is not installed (/usr/sbin/dockerd and docker)")
    # A short path: dockerd and containerd put unix sockets under the exec root.
    root = Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp"))
    cgroup_parent = f"ketch-callers-{secrets.token_hex(4)}"
    with network_namespace("ketch-dockerd") as namespace:
        daemon = Dockerd(root, namespace, cgroup_parent)
        try:
            daemon.wait_until_ready()
            import_busybox(daemon, tmp_path_factory.mktemp("dockerd-image"))
            yield daemon
        finally:
            daemon.stop()
            subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
            subprocess.run(["umount", "-R", "-l", str(root / "data")], capture_output=True)
            remove_cgroup_trees(cgroup_parent)
            shutil.rmtree(root, ignore_errors=True)


def test_dockerd_run_echo(dockerd):
    result = dockerd.docker(*RUN, "--rm", "busybox", "echo", "hi")
    assert result.returncode == 0, result.stderr + dockerd.log_text()
    assert result.stdout == "hi\n"


def test_dockerd_run_exit_code(dockerd):
    result = dockerd.docker(*RUN, "--rm", "busybox", "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr


def test_dockerd_run_removes_container(dockerd):
    dockerd.docker(*RUN, "--rm", "--name", "gone", "busybox", "true")
    result = dockerd.docker("ps", "--all", "--quiet", "--filter", "name=gone")
    assert result.stdout == ""


def test_dockerd_detached_stop(dockerd):
    started = dockerd.docker(*RUN, "--detach", "--name", "sleeper", "busybox", "sleep", "300")
    try:
        assert started.returncode == 0, started.stderr + dockerd.log_text()
        inspect = dockerd.docker("inspect", "--format", "{{.State.Status}}", "sleeper")
        assert inspect.stdout.strip() == "running"
        stopped = dockerd.docker("stop", "--time", "1", "sleeper")
        assert stopped.returncode == 0, stopped.stderr
    finally:
        dockerd.docker("rm", "--force", "sleeper")


def test_dockerd_exec(dockerd):
    started = dockerd.docker(*RUN, "--detach", "--name", "execd", "busybox", "sleep", "300")
    try:
        assert started.returncode == 0, started.stderr
        result = dockerd.docker("exec", "execd", "sh", "-c", "echo in-exec; exit 2")
        assert result.returncode == 2, result.stderr
        assert result.stdout == "in-exec\n"
    finally:
        dockerd.docker("rm", "--force", "execd")


def test_dockerd_memory_limit(dockerd):
    result = dockerd.docker(
        *RUN, "--rm", "--memory", "64m", "busybox",
        "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(64 * 1024 * 1024)


def test_dockerd_tty(dockerd):
    result = dockerd.docker(*RUN, "--rm", "--tty", "busybox", "tty")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("/dev/pts/")


def test_dockerd_seccomp_unconfined(dockerd):
    result = dockerd.docker(
        *RUN, "--rm", "--security-opt", "seccomp=unconfined", "busybox",
        "grep", "^Seccomp:", "/proc/self/status",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Seccomp:", "0"]


def test_dockerd_default_seccomp_profile(dockerd):
    result = dockerd.docker(*RUN, "--rm", "busybox", "grep", "^Seccomp:", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Seccomp:", "2"]
