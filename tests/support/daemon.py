"""A ketchd under test: its own data and exec roots, inside a network namespace of its own,
with a registry beside it that serves as its docker.io mirror and contains busybox.

The fixture takes everything down again by PID, also when the test fails: containers
through the API, then ketchd, the supervisor and the registry, then any mount left under
its roots and any cgroup its containers left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ketch.engine.config import DEFAULT_DATA_ROOT
from ketch.network.instance import Instance, instance_for
from support.cgroups import own_cgroup_directories
from support.netns import NetworkNamespace, create_namespace, delete_namespace
from support.registry import start_registry

VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT_SECONDS = 20.0


@dataclass
class KetchDaemon:
    root: Path
    namespace: NetworkNamespace
    registry_address: str
    process: subprocess.Popen[bytes]
    log_path: Path
    container_ids: set[str] = field(default_factory=set)

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def socket_path(self) -> Path:
        return self.exec_root / "ketch.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def instance(self) -> Instance:
        """The tag, default bridge and nftables table name that follow from the data root."""
        return instance_for(self.data_root, DEFAULT_DATA_ROOT)

    def ketch(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the ketch CLI against this daemon and capture its output."""
        return subprocess.run(
            [str(VENV_BIN / "ketch"), "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the real docker CLI with DOCKER_HOST pointed at this daemon."""
        env = dict(os.environ, DOCKER_HOST=self.host, DOCKER_CONFIG=str(self.root / "docker"))
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def docker_ok(daemon: KetchDaemon, *args: str, timeout: float = 60) -> str:
    """Run the docker CLI against ``daemon``, assert that it succeeded, and return stdout."""
    result = daemon.docker(*args, timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def ketch_ok(daemon: KetchDaemon, *args: str, timeout: float = 60) -> str:
    """Run the ketch CLI against ``daemon``, assert that it succeeded, and return stdout."""
    result = daemon.ketch(*args, timeout=timeout)
    assert result.returncode == 0, f"ketch {' '.join(args)}: {result.stderr}"
    return result.stdout


def run_to_exit(daemon: KetchDaemon, name: str, script: str, *options: str) -> None:
    """Run ``sh -c script`` in a busybox container named ``name`` and wait for its exit."""
    docker_ok(daemon, "run", "-d", "--name", name, *options, "busybox", "sh", "-c", script)
    docker_ok(daemon, "wait", name)


def _wait_for_socket(daemon: KetchDaemon) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(
                f"ketchd exited with {daemon.process.returncode}:\n{daemon.log_text()}"
            )
        if daemon.socket_path.exists() and daemon.ketch("version").returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"ketchd did not answer within {READY_TIMEOUT_SECONDS} s:\n{daemon.log_text()}"
    )


def push_base_image(namespace: NetworkNamespace, registry_address: str) -> None:
    """Push busybox into the registry with the project's own base-image script."""
    command = [sys.executable, "-m", "ketch.images.baseimage", "--registry", registry_address]
    subprocess.run(namespace.command(command), check=True, capture_output=True, timeout=120)


def launch_ketchd(root: Path, namespace: NetworkNamespace, registry_address: str) -> KetchDaemon:
    """Start ketchd with its roots under ``root`` in ``namespace``, with the registry as its
    docker.io mirror, and wait until it serves. The namespace and registry stay the caller's."""
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "daemon.json"
    config_path.write_text(json.dumps({"registry-mirrors": [f"http://{registry_address}"]}))
    (root / "exec").mkdir(parents=True, exist_ok=True)
    log_path = root / "ketchd.log"
    command = [
        str(VENV_BIN / "ketchd"),
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--host", f"unix://{root / 'exec' / 'ketch.sock'}",
        "--config-file", str(config_path),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(namespace.command(command), stdout=log, stderr=log)
    daemon = KetchDaemon(root, namespace, registry_address, process, log_path)
    try:
        _wait_for_socket(daemon)
    except BaseException:
        stop_ketchd(daemon)
        raise
    return daemon


def start_daemon(root: Path) -> KetchDaemon:
    root.mkdir(parents=True, exist_ok=True)
    namespace = create_namespace("ketch-e2e")
    registry = None
    try:
        registry = start_registry(root / "registry", netns=namespace.name)
        push_base_image(namespace, registry.address)
        daemon = launch_ketchd(root, namespace, registry.address)
        daemon.registry = registry  # type: ignore[attr-defined]
        return daemon
    except BaseException:
        if registry is not None:
            registry.stop()
        delete_namespace(namespace)
        raise


def _remove_containers(daemon: KetchDaemon) -> None:
    listing = daemon.ketch("ps", "-aq", "--no-trunc", timeout=30)
    ids = listing.stdout.split() if listing.returncode == 0 else []
    daemon.container_ids.update(ids)
    if ids:
        daemon.ketch("rm", "-f", *ids, timeout=60)


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop_supervisor(exec_root: Path) -> None:
    pid_file = exec_root / "supervisor.pid"
    if pid_file.exists():
        text = pid_file.read_text().strip()
        if text.isdigit():
            _stop_pid(int(text))


def _unmount_under(root: Path) -> None:
    """Unmount whatever is still mounted below ``root``, deepest first."""
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        targets = [line.split()[4] for line in mountinfo]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


def _remove_container_cgroups(container_ids: set[str]) -> None:
    """Remove cgroups named after this daemon's containers under our own cgroup."""
    for container_id in container_ids:
        for directory in own_cgroup_directories(f"ketch/{container_id}"):
            try:
                directory.rmdir()
            except OSError:
                pass


def stop_ketchd(daemon: KetchDaemon) -> None:
    """Remove the daemon's containers, stop ketchd and its supervisor, and remove what they
    left: mounts under its root and its containers' cgroups."""
    try:
        if daemon.process.poll() is None:
            _remove_containers(daemon)
    finally:
        _stop_pid(daemon.process.pid)
        daemon.process.wait(timeout=15)
        _stop_supervisor(daemon.exec_root)
        _unmount_under(daemon.root)
        _remove_container_cgroups(daemon.container_ids)


def stop_daemon(daemon: KetchDaemon) -> None:
    try:
        stop_ketchd(daemon)
    finally:
        # The namespace goes even when the registry fails to stop.
        try:
            daemon.registry.stop()  # type: ignore[attr-defined]
        finally:
            delete_namespace(daemon.namespace)


def daemon_fixture() -> Iterator[KetchDaemon]:
    # Unix socket paths are limited to 108 bytes, so the root is short and under /tmp.
    root = Path(tempfile.mkdtemp(prefix="ketch-e2e-", dir="/tmp"))
    daemon = start_daemon(root)
    try:
        yield daemon
    finally:
        stop_daemon(daemon)
        shutil.rmtree(root, ignore_errors=True)
