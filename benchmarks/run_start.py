"""Time `ketch run --rm --network none busybox true` against `docker run --rm` on dockerd
and `podman run --rm`.

Both daemons run in one network namespace made for the run, each with private roots:
ketchd with a loopback registry as its docker.io mirror, Debian's dockerd 20.10 as
tests/support/dockerd.py starts it (bridge, iptables and forwarding off, ketch-runc
registered as an extra runtime that these runs do not use) and busybox brought in with
`docker import`. Debian's podman 4.3 runs in the same namespace through nsenter, with
private storage and configuration. It uses runc, because Debian's crun 1.8 rejects a
hybrid host whose cgroup v2 hierarchy has controllers (this one has hugetlb). It uses
cgroup_manager "cgroupfs" and `--cgroups no-conmon` because there is no systemd here.
busybox comes in with `podman import`. The runs alternate between the commands so that
the machine's state affects all alike, and the script prints the median and the ratio of
each. Run it as root after scripts/setup, with docker.io and podman installed (`apt-get
install docker.io podman`):

    .venv/bin/python benchmarks/run_start.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.cgroups import remove_cgroup_trees  # noqa: E402
from support.daemon import start_daemon, stop_daemon  # noqa: E402
from support.dockerd import Dockerd as PrivateDockerd  # noqa: E402
from support.dockerd import import_busybox  # noqa: E402
from support.netns import NetworkNamespace  # noqa: E402

# Relative, so that dockerd makes its containers' cgroups under its own cgroup.
DOCKER_CGROUP_PARENT = "ketch-bench-docker"
PODMAN_CGROUP_PARENT = "ketch-bench-podman"

PODMAN_CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "none"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{root}/events.log"
tmp_dir = "{root}/tmp"
"""
PODMAN_STORAGE_CONF = """[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""


def write_podman_config(root: Path) -> dict[str, str]:
    """Write podman's configuration files and tmp directory under ``root``, and return the
    environment that points podman at them."""
    (root / "tmp").mkdir(parents=True)
    (root / "containers.conf").write_text(PODMAN_CONTAINERS_CONF.format(root=root))
    (root / "storage.conf").write_text(PODMAN_STORAGE_CONF.format(root=root))
    (root / "registries.conf").write_text("")
    return dict(
        os.environ,
        CONTAINERS_CONF=str(root / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(root / "storage.conf"),
        CONTAINERS_REGISTRIES_CONF=str(root / "registries.conf"),
    )


class Dockerd(PrivateDockerd):
    """tests/support's private dockerd with the benchmarks' cgroup parent, which responds
    once constructed. ps_many.py uses it too."""

    def __init__(self, root: Path, namespace: NetworkNamespace) -> None:
        super().__init__(root, namespace, DOCKER_CGROUP_PARENT)
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise


class Podman:
    """Debian's podman with private storage, run, tmp and configuration under ``root``.

    The default ulimits stay below the host's hard limits because podman asks for nofile
    1048576 for root, which root without CAP_SYS_RESOURCE cannot grant.
    """

    def __init__(self, root: Path, namespace: NetworkNamespace) -> None:
        self.root = root
        self.namespace = namespace
        self.environment = write_podman_config(root)

    def command(self, *args: str) -> list[str]:
        return self.namespace.command(["podman", *args])

    def run_options(self) -> list[str]:
        return ["--pull", "never", "--cgroups", "no-conmon", "--cgroup-parent",
                PODMAN_CGROUP_PARENT]  # fmt: skip

    def clean(self) -> None:
        for args in (("rm", "--all", "--force", "--time", "0"), ("rmi", "--all", "--force")):
            subprocess.run(self.command(*args), capture_output=True, env=self.environment)
        # podman's overlay storage may leave mounts under its private roots.
        for directory in ("storage", "run"):
            subprocess.run(["umount", "-R", "-l", str(self.root / directory)], capture_output=True)
        remove_cgroup_trees(PODMAN_CGROUP_PARENT)


def time_command(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each command")
    options = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ketch-bench-", dir="/tmp"))
    ketchd = start_daemon(root / "ketch")
    dockerd = None
    podman = None
    try:
        dockerd = Dockerd(root, ketchd.namespace)
        tarball = import_busybox(dockerd, root)
        podman = Podman(root / "podman", ketchd.namespace)
        subprocess.run(
            podman.command("import", str(tarball), "localhost/busybox:latest"),
            check=True, capture_output=True, env=podman.environment,
        )  # fmt: skip
        venv_bin = Path(sys.executable).parent
        run_args = ["run", "--rm", "--network", "none", "busybox", "true"]
        env = dict(os.environ, DOCKER_CONFIG=str(root / "docker-config"))
        commands = {
            "ketch": ([str(venv_bin / "ketch"), "-H", ketchd.host, *run_args], env),
            "docker": (["docker", "-H", f"unix://{dockerd.socket}", *run_args], env),
            "docker CLI -> ketchd": (["docker", "-H", ketchd.host, *run_args], env),
            "podman": (
                podman.command("run", "--rm", "--network", "none", *podman.run_options(),
                               "localhost/busybox:latest", "true"),
                podman.environment,
            ),
        }  # fmt: skip
        for argv, environment in commands.values():
            for _ in range(3):
                time_command(argv, environment)
        timings: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.runs):
            for name, (argv, environment) in commands.items():
                timings[name].append(time_command(argv, environment))
        medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
        print(f"run --rm --network none busybox true, median of {options.runs} runs:")
        for name, median in medians.items():
            print(f"  {name:<22} {median:7.1f} ms")
        print(f"ratio ketch / docker: {medians['ketch'] / medians['docker']:.2f}")
        print(
            f"ratio docker CLI on ketchd / docker: "
            f"{medians['docker CLI -> ketchd'] / medians['docker']:.2f}"
        )
        print(f"ratio ketch / podman: {medians['ketch'] / medians['podman']:.2f}")
    finally:
        if podman is not None:
            podman.clean()
        if dockerd is not None:
            dockerd.stop()
            remove_cgroup_trees(DOCKER_CGROUP_PARENT)
        stop_daemon(ketchd)
        subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
