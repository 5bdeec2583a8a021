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

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cgroups import remove_cgroup_trees
from support.dockerd import DOCKERD, Dockerd, import_busybox
from support.netns import network_namespace

RUN = ["run", "--runtime", "ketch"]


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
