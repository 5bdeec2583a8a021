"""Memory per container and start time: ketch against docker and podman in one run.

For each engine the script starts N containers with ``run -d --network none busybox sleep
1000``, one after the other, and times it. With the N containers running it reads the RSS
and PSS (from /proc/<pid>/smaps_rollup) of every engine process, subtracts the same
processes' figures with no container, and divides by N. It then removes the containers,
starts N again with K ``run -d`` commands at a time, times that, and removes them. The
containers' own ``sleep`` processes are not counted, because they are the same under
every engine. A third figure, "unique", counts each physical page of the engine's processes
once, from /proc/<pid>/pagemap: PSS splits a page shared with processes outside the engine
(libpython with this script, libc with everything), and this figure does not.

Engine processes: ketch is ketchd and its supervisor (ketch CLI), with busybox brought in
with ``ketch import`` from the same tarball as the other engines, or pulled from a
loopback registry with ``--pull``. A pull makes ketchd import its registry client
and pull code, which it otherwise leaves out, so ``--pull`` shows the memory of a ketchd
that has pulled. docker is Debian's dockerd 20.10, its containerd and every containerd-shim,
with private roots, bridge, iptables and forwarding off, and busybox brought in with
``docker import``. podman is every conmon, because podman itself exits after each command.
Debian's podman 4.3 runs with private storage, runc and cgroupfs, and busybox comes in
with ``podman import``. All three run in one network namespace made for the run. docker or
podman is skipped, with a message, when it is not installed.

Run it as root after scripts/setup:

    .venv/bin/python benchmarks/container_memory.py [--count 100] [--parallel 8] [--pull]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from memory_engines import (  # noqa: E402
    DockerEngine,
    KetchEngine,
    PodmanEngine,
    podman_installed,
)

from support.daemon import start_daemon  # noqa: E402
from support.dockerd import make_busybox_tarball  # noqa: E402

# Time for the last containers' processes to settle before memory is read.
SETTLE_SECONDS = 2.0

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# The page frame number in a /proc/<pid>/pagemap entry: bits 0-54 (kernel's pagemap.rst).
FRAME_MASK = (1 << 55) - 1


@dataclass
class Result:
    """One engine's figures: start times in seconds, and memory per container in KiB as the
    growth over the idle engine and as the whole engine's total divided by the count."""

    engine: str
    sequential_seconds: float
    parallel_seconds: float
    process_count: int
    rss_per_container: float
    pss_per_container: float
    rss_total_per_container: float
    pss_total_per_container: float
    unique_total_per_container: float


def memory_kib(pid: int) -> tuple[int, int]:
    """Return ``(rss, pss)`` of a process in KiB, or ``(0, 0)`` if it has exited."""
    values = {"Rss": 0, "Pss": 0}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0])
    return values["Rss"], values["Pss"]


def resident_frames(pid: int) -> set[int]:
    """Return the physical page frames that ``pid`` has resident, from /proc/<pid>/pagemap
    (frame numbers need root), reading only the mappings that smaps shows with some RSS."""
    frames: set[int] = set()
    try:
        ranges = mapped_ranges_with_rss(pid)
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for start, end in ranges:
                pagemap.seek(start // PAGE_SIZE * 8)
                entries = array("Q", pagemap.read((end - start) // PAGE_SIZE * 8))
                frames.update(entry & FRAME_MASK for entry in entries if entry >> 63)
    except (FileNotFoundError, ProcessLookupError):
        return set()
    return frames


def mapped_ranges_with_rss(pid: int) -> list[tuple[int, int]]:
    ranges = []
    current: tuple[int, int] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            start, _, end = first.partition("-")
            current = (int(start, 16), int(end, 16))
        elif first == "Rss:" and current is not None and int(line.split()[1]) > 0:
            ranges.append(current)
    return ranges


def unique_memory_kib(pids: dict[str, int]) -> int:
    """Return the KiB of physical memory the processes have resident, each page counted
    once however many of them map it. Unlike the sum of PSS, a page shared with a process
    outside the set (libc, or libpython shared with this script) counts in full."""
    frames: set[int] = set()
    for pid in pids.values():
        frames |= resident_frames(pid)
    return len(frames) * PAGE_SIZE // 1024


def total_memory_kib(pids: dict[str, int]) -> tuple[int, int]:
    figures = [memory_kib(pid) for pid in pids.values()]
    return sum(rss for rss, _ in figures), sum(pss for _, pss in figures)


def start_in_sequence(engine, count: int) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    for number in range(count):
        engine.run(f"mem{number}")
    return time.monotonic() - started


def start_in_parallel(engine, count: int, parallel: int) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        # list() re-raises the first failed run.
        list(pool.map(engine.run, [f"par{number}" for number in range(count)]))
    return time.monotonic() - started


def measure_engine(engine, count: int, parallel: int) -> Result:  # type: ignore[no-untyped-def]
    """Run both start modes on ``engine`` and read its memory with ``count`` containers."""
    idle = engine.processes()
    idle_rss, idle_pss = total_memory_kib(idle)

    sequential = start_in_sequence(engine, count)
    time.sleep(SETTLE_SECONDS)
    busy = engine.processes()
    busy_rss, busy_pss = total_memory_kib(busy)
    busy_unique = unique_memory_kib(busy)
    engine.remove_all()

    parallel_seconds = start_in_parallel(engine, count, parallel)
    engine.remove_all()

    print(
        f"{engine.name}: {len(idle)} processes idle ({idle_rss} KiB RSS, {idle_pss} KiB PSS), "
        f"{len(busy)} with {count} containers ({busy_rss} KiB RSS, {busy_pss} KiB PSS, "
        f"{busy_unique} KiB in unique pages)",
        flush=True,
    )
    return Result(
        engine=engine.name,
        sequential_seconds=sequential,
        parallel_seconds=parallel_seconds,
        process_count=len(busy),
        rss_per_container=(busy_rss - idle_rss) / count,
        pss_per_container=(busy_pss - idle_pss) / count,
        rss_total_per_container=busy_rss / count,
        pss_total_per_container=busy_pss / count,
        unique_total_per_container=busy_unique / count,
    )


def print_table(results: list[Result], count: int, parallel: int) -> None:
    print()
    print(
        f"{'engine':<8}{'processes':>10}{'in sequence':>13}{f'{parallel} at a time':>14}"
        f"{'RSS growth':>13}{'PSS growth':>13}{'RSS total':>13}{'PSS total':>13}"
        f"{'unique':>13}"
    )
    for result in results:
        print(
            f"{result.engine:<8}{result.process_count:>10}{result.sequential_seconds:>11.1f} s"
            f"{result.parallel_seconds:>12.1f} s{result.rss_per_container:>9.0f} KiB"
            f"{result.pss_per_container:>9.0f} KiB{result.rss_total_per_container:>9.0f} KiB"
            f"{result.pss_total_per_container:>9.0f} KiB"
            f"{result.unique_total_per_container:>9.0f} KiB"
        )
    print(
        f"({count} containers. In sequence and {parallel} at a time: seconds to start all "
        f"{count}. Growth: the engine processes' RSS or PSS with {count} running "
        f"minus idle, divided by {count}. Total: with {count} running, divided by {count}. "
        "Unique: the physical pages of the engine's processes with the containers running, "
        f"each counted once, divided by {count}. In the ratios below, less than 1 means "
        "ketch took less time or memory.)"
    )

    by_name = {result.engine: result for result in results}
    ketch = by_name["ketch"]
    for peer_name in ("docker", "podman"):
        peer = by_name.get(peer_name)
        if peer is None:
            continue
        print(
            f"ratio ketch / {peer_name}: in sequence "
            f"{ketch.sequential_seconds / peer.sequential_seconds:.2f}, {parallel} at a time "
            f"{ketch.parallel_seconds / peer.parallel_seconds:.2f}, "
            f"RSS {ratio(ketch.rss_per_container, peer.rss_per_container)}, "
            f"PSS {ratio(ketch.pss_per_container, peer.pss_per_container)}; totals: "
            f"RSS {ratio(ketch.rss_total_per_container, peer.rss_total_per_container)}, "
            f"PSS {ratio(ketch.pss_total_per_container, peer.pss_total_per_container)}, "
            f"unique {ratio(ketch.unique_total_per_container, peer.unique_total_per_container)}"
        )


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.3f}" if denominator > 0 else "n/a"


def close_engine(engine) -> None:  # type: ignore[no-untyped-def]
    """Stop ``engine`` and remove what it made, reporting a failure without raising, so that
    the engines after it are still cleaned up."""
    try:
        engine.close()
    except Exception as error:
        print(f"cleaning up {engine.name} failed: {error}", file=sys.stderr)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="containers per engine (100)")
    parser.add_argument(
        "--parallel",
        type=int,
        default=8,
        help="run -d commands in flight at once in the second pass (8)",
    )
    parser.add_argument(
        "--pull",
        action="store_true",
        help="bring busybox into ketch with a pull from the loopback registry instead of "
        "ketch import, so that ketchd has loaded its registry client when it is measured",
    )
    arguments = parser.parse_args()
    if arguments.count < 1:
        parser.error(f"--count must be at least 1, got {arguments.count}")
    if arguments.parallel < 1:
        parser.error(f"--parallel must be at least 1, got {arguments.parallel}")
    return arguments


def exit_on_sigterm(signal_number: int, frame: object) -> None:
    # SystemExit unwinds through the finally block, so a terminated run still cleans up.
    raise SystemExit(128 + signal_number)


def main() -> None:
    arguments = parse_arguments()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    print(f"load average before: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    root = Path(tempfile.mkdtemp(prefix="ketch-mem-", dir="/tmp"))
    engines = []
    try:
        ketch = KetchEngine(start_daemon(root / "ketch"))
        engines.append(ketch)
        tarball = make_busybox_tarball(root)
        if arguments.pull:
            ketch.pull_busybox()
        else:
            ketch.import_busybox(tarball)
        if shutil.which("dockerd") is None or shutil.which("docker") is None:
            print("docker skipped: dockerd or docker is not installed (apt-get install docker.io)")
        else:
            engines.append(DockerEngine(root / "docker", ketch.daemon.namespace, tarball))
        if not podman_installed():
            print("podman skipped: podman or conmon is not installed (apt-get install podman)")
        else:
            engines.append(PodmanEngine(root / "podman", ketch.daemon.namespace, tarball))

        results = [
            measure_engine(engine, arguments.count, arguments.parallel) for engine in engines
        ]
        print_table(results, arguments.count, arguments.parallel)
        print(f"load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    finally:
        # ketch last, because the other engines run in its network namespace.
        for engine in reversed(engines):
            close_engine(engine)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
