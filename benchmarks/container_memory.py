"""Memory per container: the engine's processes with N ``sleep`` containers running.

Starts a ketchd (with its supervisor) in a network namespace of its own, as the
end-to-end tests do, and measures the RSS and PSS of ketchd and the supervisor (from
/proc/<pid>/smaps_rollup) with no container, then after ``docker run -d busybox sleep``
N times. It prints both processes' figures and the growth per container. The
containers' own processes (sleep) are not counted, as the containers' payload is the
same under every engine.

Run it as root:

    .venv/bin/python benchmarks/container_memory.py [--count 100]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.daemon import start_daemon, stop_daemon  # noqa: E402


def memory_kib(pid: int) -> tuple[int, int]:
    """Return ``(rss, pss)`` of a process in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0])
    return values["Rss"], values["Pss"]


def engine_pids(daemon) -> dict[str, int]:  # type: ignore[no-untyped-def]
    supervisor = int((daemon.exec_root / "supervisor.pid").read_text().split()[0])
    ketchd = int((daemon.exec_root / "ketchd.pid").read_text().split()[0])
    return {"ketchd": ketchd, "supervisor": supervisor}


def measure(daemon) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    return {name: memory_kib(pid) for name, pid in engine_pids(daemon).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="containers to run (100)")
    arguments = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ketch-mem-", dir="/tmp"))
    daemon = start_daemon(root)
    try:
        pulled = daemon.docker("pull", "busybox")
        if pulled.returncode != 0:
            raise SystemExit(f"pull failed: {pulled.stderr}")
        before = measure(daemon)
        started = time.monotonic()
        for number in range(arguments.count):
            result = daemon.docker(
                "run", "-d", "--network", "none", "--name", f"mem{number}", "busybox",
                "sleep", "1000",
            )  # fmt: skip
            if result.returncode != 0:
                raise SystemExit(f"run {number} failed: {result.stderr}")
        elapsed = time.monotonic() - started
        time.sleep(1)
        after = measure(daemon)
        print(f"{arguments.count} containers started in {elapsed:.1f} s (docker run -d each)")
        print(
            f"{'process':<12}{'RSS before':>12}{'RSS after':>12}{'PSS before':>12}{'PSS after':>12}"
        )
        for name in before:
            (rss0, pss0), (rss1, pss1) = before[name], after[name]
            print(f"{name:<12}{rss0:>10} K{rss1:>10} K{pss0:>10} K{pss1:>10} K")
        total_rss = sum(rss for rss, _ in after.values())
        total_pss = sum(pss for _, pss in after.values())
        growth_rss = total_rss - sum(rss for rss, _ in before.values())
        growth_pss = total_pss - sum(pss for _, pss in before.values())
        count = arguments.count
        print(
            f"engine total / {count}: RSS {total_rss / count:.0f} KiB, "
            f"PSS {total_pss / count:.0f} KiB"
        )
        print(
            f"growth / {count}: RSS {growth_rss / count:.0f} KiB, PSS {growth_pss / count:.0f} KiB"
        )
    finally:
        stop_daemon(daemon)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
