"""Compare TCP throughput through a published port with direct and loopback transfers.

One run measures three paths: through the published port, to the container's address
directly, and over plain loopback.

With ``--docker`` the run also measures dockerd's userland proxy (docker-proxy).

ketchd runs in a network namespace created for the run (tests/support/daemon.py), and dockerd
in another one, so every byte stays inside those namespaces. A sink server, a small Python
program started with ``nsenter`` in the container's network namespace, reads with 1 MiB
buffers and reports the byte count when the client closes its write half. The client runs
in the daemon's namespace, sends ``--megabytes`` in 1 MiB writes and stops the clock when
the count comes back, so every byte has arrived. The paths alternate between runs, and the
script prints the median MB/s of each and the ratios. Run it as root after scripts/setup:

    .venv/bin/python benchmarks/port_throughput.py [--runs 5] [--megabytes 1024] [--docker]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.daemon import start_daemon, stop_daemon  # noqa: E402
from support.dockerd import DOCKERD, import_busybox, read_pid, stop_process  # noqa: E402
from support.netns import NetworkNamespace, create_namespace, delete_namespace  # noqa: E402

SINK_PORT = 5001
PUBLISHED_PORT = 15001
LOOPBACK_PORT = 15002
DOCKER_PUBLISHED_PORT = 15003
READY_SECONDS = 60.0
# Relative, so that dockerd makes its containers' cgroups under its own cgroup.
DOCKER_CGROUP_PARENT = "ketch-bench-ports"

SINK = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen()
buffer = bytearray(1 << 20)
while True:
    connection, _ = server.accept()
    received = 0
    while count := connection.recv_into(buffer):
        received += count
    connection.sendall(str(received).encode())
    connection.close()
"""

CLIENT = """
import socket, sys, time
address, port, megabytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = bytes(1 << 20)
started = time.perf_counter()
client = socket.create_connection((address, port))
for _ in range(megabytes):
    client.sendall(chunk)
client.shutdown(socket.SHUT_WR)
reply = client.recv(64)
elapsed = time.perf_counter() - started
if int(reply or b"0") != megabytes << 20:
    sys.exit(f"the sink received {reply!r} bytes, not {megabytes << 20}")
print(elapsed)
"""


def start_sink(namespace_path: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["nsenter", f"--net={namespace_path}", sys.executable, "-c", SINK, str(port)]
    )


def megabytes_per_second(
    namespace: NetworkNamespace, address: str, port: int, megabytes: int
) -> float:
    """Send ``megabytes`` MiB to address:port from inside ``namespace``; return MB/s."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        result = subprocess.run(
            namespace.command([sys.executable, "-c", CLIENT, address, str(port), str(megabytes)]),
            capture_output=True,
            text=True,
        )
        if result.returncode == 0:
            return megabytes * (1 << 20) / 1e6 / float(result.stdout)
        if time.monotonic() > deadline:
            raise SystemExit(f"transfer to {address}:{port} failed: {result.stderr.strip()}")
        time.sleep(0.2)  # the sink may not listen yet


class PrivateDockerd:
    """Debian's dockerd in its own namespace, with its default bridge and docker-proxy for
    published ports; iptables stays off, so docker-proxy carries loopback traffic."""

    def __init__(self, root: Path, namespace: NetworkNamespace) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.pid_file = root / "dockerd.pid"
        self.exec_root = root / "exec"
        command = [
            str(DOCKERD),
            "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
            "--userland-proxy=true",
            "--data-root", str(root / "data"), "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pid_file), "--host", f"unix://{self.socket}",
            "--cgroup-parent", DOCKER_CGROUP_PARENT,
        ]  # fmt: skip
        self.log = open(root / "dockerd.log", "wb")
        self.process = subprocess.Popen(
            namespace.command(command), stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + READY_SECONDS
        while self.docker("version").returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dockerd did not start; see {root / 'dockerd.log'}")
            time.sleep(0.2)

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "--host", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DOCKER_CONFIG": str(self.root)},
        )

    def stop(self) -> None:
        containerd_pid = read_pid(self.exec_root / "containerd" / "containerd.pid")
        stop_process(read_pid(self.pid_file) or self.process.pid)
        self.process.wait(timeout=60)
        if containerd_pid is not None:
            stop_process(containerd_pid)
        self.log.close()


def measure_ketch(root: Path, options: argparse.Namespace) -> dict[str, list[float]]:
    daemon = start_daemon(root / "ketch")
    sinks: list[subprocess.Popen[bytes]] = []
    try:
        run = daemon.ketch(
            "run", "-d", "-p", f"127.0.0.1:{PUBLISHED_PORT}:{SINK_PORT}", "busybox", "sleep", "3600"
        )  # fmt: skip
        if run.returncode != 0:
            raise SystemExit(f"ketch run failed: {run.stderr.strip()}")
        shown = json.loads(daemon.ketch("inspect", run.stdout.strip()).stdout)[0]
        settings = shown["NetworkSettings"]
        sinks.append(start_sink(settings["SandboxKey"], SINK_PORT))
        sinks.append(start_sink(daemon.namespace.path, LOOPBACK_PORT))
        paths = {
            "loopback": ("127.0.0.1", LOOPBACK_PORT),
            "direct": (settings["IPAddress"], SINK_PORT),
            "published": ("127.0.0.1", PUBLISHED_PORT),
        }
        return measure_paths(daemon.namespace, paths, options)
    finally:
        for sink in sinks:
            sink.kill()
            sink.wait()
        stop_daemon(daemon)


def measure_docker(root: Path, options: argparse.Namespace) -> dict[str, list[float]]:
    namespace = create_namespace("ketch-bench-docker")
    dockerd = None
    sinks: list[subprocess.Popen[bytes]] = []
    try:
        (root / "docker").mkdir(parents=True)
        dockerd = PrivateDockerd(root / "docker", namespace)
        import_busybox(dockerd, root / "docker")  # type: ignore[arg-type]
        run = dockerd.docker(
            "run", "-d", "-p", f"127.0.0.1:{DOCKER_PUBLISHED_PORT}:{SINK_PORT}", "busybox",
            "sleep", "3600",
        )  # fmt: skip
        if run.returncode != 0:
            raise SystemExit(f"docker run failed: {run.stderr.strip()}")
        container_id = run.stdout.strip()
        shown = json.loads(dockerd.docker("inspect", container_id).stdout)[0]
        sinks.append(start_sink(f"/proc/{shown['State']['Pid']}/ns/net", SINK_PORT))
        paths = {
            "docker direct": (shown["NetworkSettings"]["IPAddress"], SINK_PORT),
            "docker published": ("127.0.0.1", DOCKER_PUBLISHED_PORT),
        }
        try:
            return measure_paths(namespace, paths, options)
        finally:
            dockerd.docker("rm", "-f", container_id)
    finally:
        for sink in sinks:
            sink.kill()
            sink.wait()
        if dockerd is not None:
            dockerd.stop()
        delete_namespace(namespace)


def measure_paths(
    namespace: NetworkNamespace, paths: dict[str, tuple[str, int]], options: argparse.Namespace
) -> dict[str, list[float]]:
    for address, port in paths.values():
        megabytes_per_second(namespace, address, port, 16)  # warm up; waits for the sinks
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(options.runs):
        for name, (address, port) in paths.items():
            rates[name].append(megabytes_per_second(namespace, address, port, options.megabytes))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="transfers per path (default 5)")
    parser.add_argument(
        "--megabytes", type=int, default=1024, help="MiB per transfer (default 1024)"
    )
    parser.add_argument("--docker", action="store_true", help="also measure dockerd 20.10")
    options = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ketch-bench-ports-", dir="/tmp"))
    try:
        rates = measure_ketch(root, options)
        if options.docker:
            rates.update(measure_docker(root, options))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"TCP, {options.megabytes} MiB per transfer, median of {options.runs}, MB/s:")
    for name, median in medians.items():
        print(f"  {name:<17} {median:9.0f}")
    print(f"  ketch published / direct: {medians['published'] / medians['direct']:.2f}")
    print(f"  ketch published / loopback: {medians['published'] / medians['loopback']:.2f}")
    if options.docker:
        docker_ratio = medians["docker published"] / medians["docker direct"]
        print(f"  docker published / direct: {docker_ratio:.2f}")
        print(f"  ketch published / docker published: "
              f"{medians['published'] / medians['docker published']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
