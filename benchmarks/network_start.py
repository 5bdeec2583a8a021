"""Time `ketch run --rm busybox true` on the bridge network against `--network none`.
Also time `ketch start -a` of one stopped container in each mode, which connects it again
on every start. With ``--docker``, time the same for Debian's dockerd 20.10 on its default
bridge.

ketchd runs in a network namespace created for the run (tests/support/daemon.py), and dockerd
in another one, so their bridges and veths stay inside them. The runs alternate between the
modes so that the machine's state affects all alike; the script prints the median of each
and the bridge / none ratios. Run it as root after scripts/setup:

    .venv/bin/python benchmarks/network_start.py [--runs 20] [--docker]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from port_throughput import PrivateDockerd  # noqa: E402

from support.daemon import KetchDaemon, start_daemon, stop_daemon  # noqa: E402
from support.dockerd import import_busybox  # noqa: E402
from support.netns import create_namespace, delete_namespace  # noqa: E402

MODES = ("none", "bridge")


def time_run(run: Callable[..., subprocess.CompletedProcess[str]], label: str, mode: str) -> float:
    started = time.perf_counter()
    result = run("run", "--rm", "--network", mode, "busybox", "true")
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{label} run --network {mode} failed: {result.stderr.strip()}")
    return elapsed


def time_start(
    run: Callable[..., subprocess.CompletedProcess[str]], label: str, container_id: str
) -> float:
    started = time.perf_counter()
    result = run("start", "-a", container_id)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{label} start -a {container_id} failed: {result.stderr.strip()}")
    return elapsed


def create_stopped(run: Callable[..., subprocess.CompletedProcess[str]], mode: str) -> str:
    result = run("create", "--network", mode, "busybox", "true")
    if result.returncode != 0:
        raise SystemExit(f"create --network {mode} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def measure(
    runners: dict[str, Callable[..., subprocess.CompletedProcess[str]]], runs: int
) -> dict[str, list[float]]:
    stopped: dict[str, str] = {}
    for label, run in runners.items():
        for mode in MODES:
            time_run(run, label, mode)  # warm up: the first bridge run makes the bridge
            stopped[f"{label} {mode}"] = create_stopped(run, mode)
    names = [f"{label} {m}" for label in runners for m in MODES]
    times: dict[str, list[float]] = {name: [] for name in names}
    times.update({f"{name} start": [] for name in names})
    for _ in range(runs):
        for label, run in runners.items():
            for mode in MODES:
                times[f"{label} {mode}"].append(time_run(run, label, mode))
                container_id = stopped[f"{label} {mode}"]
                times[f"{label} {mode} start"].append(time_start(run, label, container_id))
    for name, container_id in stopped.items():
        runners[name.split()[0]]("rm", "-f", container_id)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per mode (default 20)")
    parser.add_argument("--docker", action="store_true", help="also time dockerd 20.10")
    options = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ketch-bench-net-", dir="/tmp"))
    daemon: KetchDaemon | None = None
    dockerd = None
    docker_namespace = None
    try:
        daemon = start_daemon(root / "ketch")
        daemon.ketch("pull", "busybox")
        runners = {"ketch": daemon.ketch}
        if options.docker:
            docker_namespace = create_namespace("ketch-bench-docker")
            (root / "docker").mkdir()
            dockerd = PrivateDockerd(root / "docker", docker_namespace)
            import_busybox(dockerd, root / "docker")  # type: ignore[arg-type]
            runners["docker"] = dockerd.docker
        times = measure(runners, options.runs)
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        if dockerd is not None:
            dockerd.stop()
        if docker_namespace is not None:
            delete_namespace(docker_namespace)
        shutil.rmtree(root, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"run --rm --network MODE busybox true, and start -a of a stopped one (start), "
        f"median of {options.runs} runs:"
    )
    for name, median in medians.items():
        print(f"  {name:<20} {median * 1000:7.1f} ms")
    for label in runners:
        ratio = medians[f"{label} bridge"] / medians[f"{label} none"]
        print(f"  {label} bridge / none: {ratio:.2f}")
        ratio = medians[f"{label} bridge start"] / medians[f"{label} none start"]
        print(f"  {label} bridge / none, start: {ratio:.2f}")


if __name__ == "__main__":
    main()
