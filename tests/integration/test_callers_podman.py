"""``ketch-runc`` behind Debian's podman 4.3, given with ``--runtime``.

podman gets private storage, run and tmp directories through CONTAINERS_CONF,
CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF, and runs in a network namespace
made for the module, with ``--network none``. Two settings keep it inside what this
machine allows:

- cgroup_manager "cgroupfs", because there is no systemd, and ``--cgroups no-conmon``
  with a relative ``--cgroup-parent``: podman 4.3 puts conmon's own cgroup at the root of
  each hierarchy, outside the test process's cgroup, unless conmon gets no cgroup.
- default ulimits no higher than the host's hard limits (root lacks CAP_SYS_RESOURCE),
  because podman requests nofile 1048576 and nproc 4194304 by default for root. The
  runtime under conmon sees a hard nproc of 32768 here (this machine's pid_max), lower
  than the test process's, so nproc stays well below both.

busybox comes in with ``podman import`` from the test rootfs, so nothing is pulled.
conmon starts ketch-runc with runc's command line.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cgroups import remove_cgroup_trees
from support.netns import NetworkNamespace, network_namespace
from support.rootfs import make_busybox_rootfs

PODMAN = Path("/usr/bin/podman")
KETCH_RUNC = Path(sys.executable).parent / "ketch-runc"
IMAGE = "localhost/busybox:latest"

CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
netns = "none"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
tmp_dir = "{root}/tmp"
"""

STORAGE_CONF = """[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""


def hard_limit(name: str) -> int:
    """Return this process's hard limit from /proc/self/limits (``Max open files``...)."""
    for line in Path("/proc/self/limits").read_text().splitlines():
        if line.startswith(name):
            return int(line[26:].split()[1])
    raise LookupError(f"{name} is not in /proc/self/limits")


class Podman:
    """The podman command line, with private configuration under ``root``."""

    def __init__(self, root: Path, namespace: NetworkNamespace, cgroup_parent: str) -> None:
        self.root = root
        self.namespace = namespace
        self.cgroup_parent = cgroup_parent
        (root / "tmp").mkdir()
        (root / "containers.conf").write_text(
            CONTAINERS_CONF.format(
                root=root,
                nofile=min(1024, hard_limit("Max open files")),
                nproc=min(4096, hard_limit("Max processes")),
            )
        )
        (root / "storage.conf").write_text(STORAGE_CONF.format(root=root))
        (root / "registries.conf").write_text("")
        self.environment = dict(
            os.environ,
            CONTAINERS_CONF=str(root / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(root / "storage.conf"),
            CONTAINERS_REGISTRIES_CONF=str(root / "registries.conf"),
        )

    def podman(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.namespace.command([str(PODMAN), *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment,
        )

    def run_options(self) -> list[str]:
        """Return the ``podman run`` options that put a container on ketch-runc."""
        return [
            "--runtime", str(KETCH_RUNC), "--pull", "never", "--network", "none",
            "--cgroups", "no-conmon", "--cgroup-parent", self.cgroup_parent,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    if not PODMAN.exists() or shutil.which("conmon") is None:
        pytest.skip("podman is not installed (apt-get install podman)")
    workdir = tmp_path_factory.mktemp("podman-image")
    rootfs = make_busybox_rootfs(workdir / "rootfs")
    tarball = workdir / "busybox.tar"
    with tarfile.open(tarball, "w") as archive:
        archive.add(rootfs, arcname=".")
    root = Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))
    cgroup_parent = f"ketch-callers-{secrets.token_hex(4)}"
    with network_namespace("ketch-podman") as namespace:
        client = Podman(root, namespace, cgroup_parent)
        try:
            imported = client.podman("import", str(tarball), IMAGE)
            assert imported.returncode == 0, imported.stderr
            yield client
        finally:
            client.podman("rm", "--all", "--force", "--time", "0")
            client.podman("rmi", "--all", "--force")
            for directory in ("storage", "run"):
                subprocess.run(["umount", "-R", "-l", str(root / directory)], capture_output=True)
            remove_cgroup_trees(cgroup_parent)
            shutil.rmtree(root, ignore_errors=True)


def test_podman_run_echo(podman):
    result = podman.podman("run", "--rm", *podman.run_options(), IMAGE, "echo", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"


def test_podman_run_exit_code(podman):
    result = podman.podman("run", "--rm", *podman.run_options(), IMAGE, "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr


def test_podman_run_removes_container(podman):
    podman.podman("run", "--rm", "--name", "gone", *podman.run_options(), IMAGE, "true")
    listed = podman.podman("ps", "--all", "--quiet", "--filter", "name=gone")
    assert listed.stdout == ""


def test_podman_detached_exec_stop(podman):
    started = podman.podman(
        "run", "--detach", "--name", "sleeper", *podman.run_options(), IMAGE, "sleep", "300"
    )
    try:
        assert started.returncode == 0, started.stderr
        executed = podman.podman("exec", "sleeper", "sh", "-c", "echo in-exec; exit 2")
        assert executed.returncode == 2, executed.stderr
        assert executed.stdout == "in-exec\n"
        stopped = podman.podman("stop", "--time", "1", "sleeper")
        assert stopped.returncode == 0, stopped.stderr
    finally:
        podman.podman("rm", "--force", "--time", "0", "sleeper")
