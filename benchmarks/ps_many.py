"""Time `ps -a` with 100 containers: `ketch ps` on ketchd against `docker ps` on dockerd.

Both daemons are set up as in run_start.py (one network namespace, private roots, busybox
imported into dockerd). Each daemon gets the same number of containers made with `create`
(state "created"), so the figure is the cost of listing them, from the CLI's start until
it has printed the table. The runs alternate between the commands, and the script prints
the median of each and their ratio. Run it as root after scripts/setup, with docker.io
installed:

    .venv/bin/python benchmarks/ps_many.py [--containers 100] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_start import DOCKER_CGROUP_PARENT, Dockerd, import_busybox, time_command  # noqa: E402

from support.cgroups import remove_cgroup_trees  # noqa: E402
from support.daemon import start_daemon, stop_daemon  # noqa: E402


def create_containers(prefix: list[str], count: int, env: dict[str, str]) -> None:
    for index in range(count):
        subprocess.run(
            [*prefix, "create", "--network", "none", "--name", f"bench-{index}", "busybox", "true"],
            check=True,
            capture_output=True,
            env=env,
        )


def count_listed(prefix: list[str], env: dict[str, str]) -> int:
    result = subprocess.run(
        [*prefix, "ps", "-a", "-q"], check=True, capture_output=True, text=True, env=env
    )
    return len(result.stdout.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=100, help="containers per daemon")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each command")
    options = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ketch-bench-ps-", dir="/tmp"))
    ketchd = start_daemon(root / "ketch")
    dockerd = None
    try:
        dockerd = Dockerd(root, ketchd.namespace)
        import_busybox(dockerd, root)
        env = dict(os.environ, DOCKER_CONFIG=str(root / "docker-config"))
        venv_bin = Path(sys.executable).parent
        # ketch pulls busybox through its loopback mirror on the first create.
        subprocess.run(
            [str(venv_bin / "ketch"), "-H", ketchd.host, "pull", "busybox"],
            check=True,
            capture_output=True,
            env=env,
        )
        prefixes = {
            "ketch": [str(venv_bin / "ketch"), "-H", ketchd.host],
            "docker": ["docker", "-H", f"unix://{dockerd.socket}"],
        }
        for name, prefix in prefixes.items():
            create_containers(prefix, options.containers, env)
            listed = count_listed(prefix, env)
            if listed != options.containers:
                raise RuntimeError(f"{name} ps -a listed {listed}, not {options.containers}")

        for prefix in prefixes.values():
            for _ in range(3):
                time_command([*prefix, "ps", "-a"], env)
        timings: dict[str, list[float]] = {name: [] for name in prefixes}
        for _ in range(options.runs):
            for name, prefix in prefixes.items():
                timings[name].append(time_command([*prefix, "ps", "-a"], env))
        medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
        print(f"ps -a with {options.containers} containers, median of {options.runs} runs:")
        for name, median in medians.items():
            print(f"  {name:<8} {median:7.1f} ms")
        print(f"ratio ketch / docker: {medians['ketch'] / medians['docker']:.2f}")
    finally:
        if dockerd is not None:
            dockerd.docker("rm", "--force", *_docker_ids(dockerd), capture_output=True)
            dockerd.stop()
            remove_cgroup_trees(DOCKER_CGROUP_PARENT)
        stop_daemon(ketchd)
        subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _docker_ids(dockerd: Dockerd) -> list[str]:
    result = dockerd.docker("ps", "-a", "-q", capture_output=True, text=True)
    return result.stdout.split()


if __name__ == "__main__":
    main()
