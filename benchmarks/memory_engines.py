"""Engines that benchmarks/container_memory.py compares: ketch, docker and podman.

Each engine wraps a daemon or command line started with private roots under one work
directory and in one network namespace that the benchmark made. An engine runs a detached
``busybox sleep`` container by name, removes all its containers, and lists the engine
processes to measure by label and pid. The containers' own processes are never listed.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

# The podman configuration (runc, cgroupfs, no network) is the run-start benchmark's.
from run_start import write_podman_config

from support.cgroups import remove_cgroup_trees
from support.daemon import KetchDaemon, stop_daemon
from support.dockerd import Dockerd
from support.netns import NetworkNamespace

PODMAN = Path("/usr/bin/podman")
PODMAN_IMAGE = "localhost/busybox:latest"


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


def read_cmdline(pid: int) -> list[str]:
    """Return the argument list of ``pid``, or an empty list if it has exited."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return raw.decode(errors="replace").rstrip("\0").split("\0")


def find_processes(program: str, marker: str) -> list[int]:
    """Return the pids whose program file name is ``program`` and whose arguments contain
    ``marker`` (a private path, so that other engines' processes on the host are left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = read_cmdline(int(entry.name))
        if argv and Path(argv[0]).name == program and any(marker in arg for arg in argv):
            found.append(int(entry.name))
    return sorted(found)


def check(result: subprocess.CompletedProcess[str], action: str) -> str:
    if result.returncode != 0:
        raise RuntimeError(f"{action} failed (exit {result.returncode}): {result.stderr.strip()}")
    return result.stdout


class KetchEngine:
    """ketchd and its supervisor, driven with the ketch CLI."""

    name = "ketch"

    def __init__(self, daemon: KetchDaemon) -> None:
        self.daemon = daemon

    def pull_busybox(self) -> None:
        """Pull busybox from the loopback registry that the daemon uses as its mirror."""
        check(self.daemon.ketch("pull", "busybox", timeout=120), "ketch pull busybox")

    def import_busybox(self, tarball: Path) -> None:
        """Bring busybox in from ``tarball`` with ``ketch import``, as docker and podman do."""
        result = self.daemon.ketch("import", str(tarball), "busybox:latest", timeout=120)
        check(result, "ketch import")

    def run(self, container: str) -> None:
        result = self.daemon.ketch(
            "run", "-d", "--network", "none", "--name", container, "busybox", "sleep", "1000",
            timeout=120,
        )  # fmt: skip
        check(result, f"ketch run {container}")

    def remove_all(self) -> None:
        ids = check(self.daemon.ketch("ps", "-aq"), "ketch ps").split()
        if ids:
            check(self.daemon.ketch("rm", "-f", *ids, timeout=300), "ketch rm")

    def processes(self) -> dict[str, int]:
        exec_root = self.daemon.exec_root
        return {
            "ketchd": read_pid(exec_root / "ketchd.pid"),
            "supervisor": read_pid(exec_root / "supervisor.pid"),
        }

    def close(self) -> None:
        stop_daemon(self.daemon)


class DockerEngine:
    """Debian's dockerd 20.10 with its containerd and one containerd-shim per container."""

    name = "docker"

    def __init__(self, root: Path, namespace: NetworkNamespace, tarball: Path) -> None:
        root.mkdir(parents=True)
        # Relative, so that dockerd makes its containers' cgroups under the benchmark's cgroup.
        self.cgroup_parent = f"ketch-mem-docker-{secrets.token_hex(4)}"
        self.dockerd = Dockerd(root, namespace, self.cgroup_parent)
        try:
            self.dockerd.wait_until_ready()
            check(self.dockerd.docker("import", str(tarball), "busybox:latest"), "docker import")
        except BaseException:
            self.close()
            raise

    def run(self, container: str) -> None:
        result = self.dockerd.docker(
            "run", "-d", "--network", "none", "--name", container, "busybox", "sleep", "1000",
        )  # fmt: skip
        check(result, f"docker run {container}")

    def remove_all(self) -> None:
        ids = check(self.dockerd.docker("ps", "-aq"), "docker ps").split()
        if ids:
            check(self.dockerd.docker("rm", "-f", *ids, timeout=300), "docker rm")

    def processes(self) -> dict[str, int]:
        exec_root = self.dockerd.exec_root
        found = {
            "dockerd": read_pid(self.dockerd.pid_file),
            "containerd": read_pid(exec_root / "containerd" / "containerd.pid"),
        }
        # Each shim's -address is the containerd socket under the engine's private exec root.
        for pid in find_processes("containerd-shim-runc-v2", str(exec_root)):
            found[f"shim {pid}"] = pid
        return found

    def close(self) -> None:
        try:
            self.remove_all()
        finally:
            self.dockerd.stop()
            subprocess.run(["umount", "-R", "-l", str(self.dockerd.exec_root)], capture_output=True)
            remove_cgroup_trees(self.cgroup_parent)


class PodmanEngine:
    """Debian's podman 4.3 with private storage and configuration. podman itself exits
    after each command, so only the conmon process of each container stays."""

    name = "podman"

    def __init__(self, root: Path, namespace: NetworkNamespace, tarball: Path) -> None:
        self.root = root
        self.namespace = namespace
        # The parent is relative, so podman makes the containers' cgroups under the
        # benchmark's cgroup. conmon gets no cgroup (--cgroups no-conmon) because podman 4.3
        # would otherwise put it at the root of each hierarchy, so it stays in that cgroup.
        self.cgroup_parent = f"ketch-mem-podman-{secrets.token_hex(4)}"
        self.environment = write_podman_config(root)
        try:
            check(self.podman("import", str(tarball), PODMAN_IMAGE), "podman import")
        except BaseException:
            self.close()
            raise

    def podman(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.namespace.command([str(PODMAN), *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment,
        )

    def run(self, container: str) -> None:
        result = self.podman(
            "run", "-d", "--pull", "never", "--network", "none", "--cgroups", "no-conmon",
            "--cgroup-parent", self.cgroup_parent, "--name", container, PODMAN_IMAGE,
            "sleep", "1000",
        )  # fmt: skip
        check(result, f"podman run {container}")

    def remove_all(self) -> None:
        check(self.podman("rm", "--all", "--force", "--time", "0", timeout=300), "podman rm")

    def processes(self) -> dict[str, int]:
        # conmon's arguments name the container's directories under the engine's private root.
        return {f"conmon {pid}": pid for pid in find_processes("conmon", str(self.root))}

    def close(self) -> None:
        try:
            self.remove_all()
            self.podman("rmi", "--all", "--force")
        finally:
            # podman's overlay storage may leave mounts under its private roots, such as
            # storage/overlay bound onto itself, which would keep the root from removal.
            unmount_under(self.root)
            remove_cgroup_trees(self.cgroup_parent)


def unmount_under(root: Path) -> None:
    """Lazily unmount every mount point below ``root``, deepest first."""
    prefix = f"{root}/"
    with open("/proc/self/mountinfo") as mountinfo:
        targets = [line.split()[4] for line in mountinfo]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def podman_installed() -> bool:
    return PODMAN.exists() and shutil.which("conmon") is not None
