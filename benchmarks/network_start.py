"""Time `ketch run --rm busybox true` on the bridge network against `--network none`.

ketchd runs in a network namespace made for the run (tests/support/daemon.py), so its
bridge and veths stay inside it. The runs alternate between the two modes so that the
machine's state affects both alike; the script prints the median of each and their ratio.
Run it as root after scripts/setup:

    .venv/bin/python benchmarks/network_start.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.daemon import KetchDaemon, start_daemon, stop_daemon  # noqa: E402

MODES = ("none", "bridge")


def time_run(daemon: KetchDaemon, mode: str) -> float:
    started = time.perf_counter()
    result = daemon.ketch("run", "--rm", "--network", mode, "busybox", "true")
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"ketch run --network {mode} failed: {result.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per mode (default 20)")
    options = parser.parse_args()

    daemon = start_daemon(Path(tempfile.mkdtemp(prefix="ketch-bench-net-")))
    try:
        daemon.ketch("pull", "busybox")
        for mode in MODES:
            time_run(daemon, mode)  # warm up: the first bridge run makes the bridge
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(options.runs):
            for mode in MODES:
                times[mode].append(time_run(daemon, mode))
    finally:
        stop_daemon(daemon)

    medians = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"ketch run --rm --network MODE busybox true, median of {options.runs} runs:")
    for mode in MODES:
        print(f"  {mode:<7} {medians[mode] * 1000:7.1f} ms")
    print(f"  bridge / none: {medians['bridge'] / medians['none']:.2f}")


if __name__ == "__main__":
    main()
