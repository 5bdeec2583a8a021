"""Time `ketch run --rm --network none busybox true` against `docker run --rm` on dockerd.

Both daemons run in one network namespace made for the run, each with private roots:
ketchd with a loopback registry as its docker.io mirror, Debian's dockerd 20.10 with
bridge, iptables and forwarding off and busybox brought in with `docker import`. The runs
alternate between the two so that the machine's state affects both alike, and the script
prints the median and the ratio of each. Run it as root after scripts/setup, with docker.io
installed (`apt-get install docker.io`):

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
from support.netns import NetworkNamespace  # noqa: E402

DOCKERD_READY_SECONDS = 60.0
# Relative, so that dockerd makes its containers' cgroups under its own cgroup.
DOCKER_CGROUP_PARENT = "ketch-bench-docker"


class Dockerd:
    """Debian's dockerd with private data root, exec root, pid file and socket."""

    def __init__(self, root: Path, namespace: NetworkNamespace) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.pid_file = root / "dockerd.pid"
        command = [
            "/usr/sbin/dockerd",
            "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--ip-masq=false", "--bridge=none",
            "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(self.pid_file), "-H", f"unix://{self.socket}",
            "--cgroup-parent", DOCKER_CGROUP_PARENT,
        ]  # fmt: skip
        self.log = open(root / "dockerd.log", "wb")
        self.process = subprocess.Popen(
            namespace.command(command), stdout=self.log, stderr=self.log
        )
        self._wait_until_ready()

    def docker(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["docker", "-H", f"unix://{self.socket}", *args], **kwargs)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + DOCKERD_READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited; see {self.root / 'dockerd.log'}")
            if self.docker("version", capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer; see {self.root / 'dockerd.log'}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def import_busybox(dockerd: Dockerd, workdir: Path) -> None:
    """Import a busybox rootfs tarball into dockerd as busybox:latest."""
    rootfs = workdir / "busybox-rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "true", "echo"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    tarball = workdir / "busybox.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    dockerd.docker("import", str(tarball), "busybox:latest", check=True, capture_output=True)


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
    try:
        dockerd = Dockerd(root, ketchd.namespace)
        import_busybox(dockerd, root)
        venv_bin = Path(sys.executable).parent
        commands = {
            "ketch": [str(venv_bin / "ketch"), "-H", ketchd.host],
            "docker": ["docker", "-H", f"unix://{dockerd.socket}"],
            "docker CLI -> ketchd": ["docker", "-H", ketchd.host],
        }
        run_args = ["run", "--rm", "--network", "none", "busybox", "true"]
        env = dict(os.environ, DOCKER_CONFIG=str(root / "docker-config"))
        for prefix in commands.values():
            for _ in range(3):
                time_command(prefix + run_args, env)
        timings: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.runs):
            for name, prefix in commands.items():
                timings[name].append(time_command(prefix + run_args, env))
        medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
        print(f"run --rm --network none busybox true, median of {options.runs} runs:")
        for name, median in medians.items():
            print(f"  {name:<22} {median:7.1f} ms")
        print(f"ratio ketch / docker: {medians['ketch'] / medians['docker']:.2f}")
        print(
            f"ratio docker CLI on ketchd / docker: "
            f"{medians['docker CLI -> ketchd'] / medians['docker']:.2f}"
        )
    finally:
        if dockerd is not None:
            dockerd.stop()
            remove_cgroup_trees(DOCKER_CGROUP_PARENT)
        stop_daemon(ketchd)
        subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
