"""Time one container's full cycle through each OCI runtime's command line.

A cycle is ``create`` -> ``start`` -> wait for the process to exit -> ``delete`` of
``true`` in a busybox bundle, each verb a separate run of the runtime's binary, as
containerd's shim and dockerd call it. Every runtime gets the same config.json (the
``runc spec`` default with the terminal off), its own ``--root`` and a relative
cgroupsPath, so the containers' cgroups go under this process's own. The runs alternate
between the runtimes so that the machine's state affects all alike. The script prints
the median cycle and the median of each verb per runtime, and the ratio to runc.

This process is a child subreaper, so each container's process is reparented to it when
``create`` exits and the wait is a plain ``waitpid``.

``--importtime`` runs one ketch-runc cycle under ``python -X importtime`` instead and
prints, per verb, the total import time and the slowest imports.

Run it as root:

    .venv/bin/python benchmarks/runtime_cycle.py [--runs 50] [--importtime]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ketch.linux import syscalls  # noqa: E402
from support.rootfs import bundle_config, make_busybox_rootfs  # noqa: E402

VENV_BIN = Path(sys.executable).parent
RUNTIMES = {
    "ketch-runc": VENV_BIN / "ketch-runc",
    "runc": Path("/usr/sbin/runc"),
    "crun": Path("/usr/bin/crun"),
}
VERBS = ("create", "start", "wait", "delete")
WARM_UP_RUNS = 3


class CycleFailed(RuntimeError):
    pass


class Runtime:
    """One runtime binary with its own --root, timing each verb of the cycle."""

    def __init__(
        self, name: str, command_prefix: list[str], workdir: Path, cgroup_parent: str
    ) -> None:
        self.name = name
        self.command_prefix = command_prefix
        self.root = workdir / "state" / name
        self.cgroup_parent = cgroup_parent
        self.null = os.open("/dev/null", os.O_RDWR)
        self.counter = 0
        self.stderr: dict[str, str] = {}

    def command(self, *args: str) -> None:
        # stderr goes to a file, not a pipe: the container's process inherits it from
        # `create`, so a pipe would not reach end of file until the container exits.
        with tempfile.TemporaryFile() as stderr:
            completed = subprocess.run(
                [*self.command_prefix, "--root", str(self.root), *args],
                stdin=self.null,
                stdout=self.null,
                stderr=stderr,
            )
            stderr.seek(0)
            self.stderr[args[0]] = stderr.read().decode(errors="replace")
        if completed.returncode != 0:
            raise CycleFailed(f"{self.name} {args[0]} failed: {self.stderr[args[0]].strip()}")

    def cycle(self, bundle: Path) -> dict[str, float]:
        """Run one create/start/wait/delete cycle; return the seconds of each step."""
        self.counter += 1
        container_id = f"{self.name}-{self.counter}"
        pid_file = bundle / f"{container_id}.pid"
        self._write_cgroups_path(bundle, container_id)
        times = {}

        started = time.perf_counter()
        self.command("create", "--bundle", str(bundle), "--pid-file", str(pid_file), container_id)
        times["create"] = time.perf_counter() - started

        pid = int(pid_file.read_text())
        started = time.perf_counter()
        self.command("start", container_id)
        times["start"] = time.perf_counter() - started

        started = time.perf_counter()
        os.waitpid(pid, 0)
        times["wait"] = time.perf_counter() - started

        started = time.perf_counter()
        self.command("delete", container_id)
        times["delete"] = time.perf_counter() - started

        pid_file.unlink()
        return times

    def _write_cgroups_path(self, bundle: Path, container_id: str) -> None:
        config_path = bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{container_id}"
        config_path.write_text(json.dumps(config))

    def close(self) -> None:
        os.close(self.null)


def make_bundle(workdir: Path, name: str, rootfs: Path) -> Path:
    bundle = workdir / "bundles" / name
    bundle.mkdir(parents=True)
    config = bundle_config(rootfs, ["true"])
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def own_cgroup_directories(relative: str) -> list[Path]:
    """Return ``relative`` below this process's cgroup in every hierarchy where it exists."""
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, own_path = line.split(":", 2)
        if controllers == "":
            mount = Path("/sys/fs/cgroup/unified")
        elif controllers.startswith("name="):
            mount = Path("/sys/fs/cgroup") / controllers.removeprefix("name=")
        else:
            mount = Path("/sys/fs/cgroup") / controllers.split(",")[0]
        candidate = mount / own_path.lstrip("/") / relative
        if candidate.is_dir():
            found.append(candidate)
    return found


def remove_cgroup_parent(relative: str) -> None:
    for directory in own_cgroup_directories(relative):
        for parent, _, _ in sorted(os.walk(directory), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(parent)
            except OSError as error:
                print(f"failed to remove cgroup {parent}: {error}", file=sys.stderr)


def usable_runtimes(
    workdir: Path, rootfs: Path, cgroup_parent: str
) -> tuple[dict[str, Runtime], dict[str, Path]]:
    """Return the runtimes whose warm-up cycles succeed, with a bundle each, and print why
    the others are skipped (crun 1.8 rejects a hybrid cgroup layout, for one)."""
    runtimes, bundles = {}, {}
    for name, binary in RUNTIMES.items():
        if not binary.exists():
            print(f"{name}: not installed at {binary}, skipped")
            continue
        runtime = Runtime(name, [str(binary)], workdir, cgroup_parent)
        bundle = make_bundle(workdir, name, rootfs)
        try:
            for _ in range(WARM_UP_RUNS):
                runtime.cycle(bundle)
        except CycleFailed as error:
            print(f"{name}: skipped, {error}")
            runtime.close()
            continue
        runtimes[name] = runtime
        bundles[name] = bundle
    return runtimes, bundles


def print_results(timings: dict[str, list[dict[str, float]]], runs: int) -> None:
    print(f"create -> start -> wait -> delete of `true`, median of {runs} cycles (ms):")
    print(f"  {'runtime':<12} {'cycle':>7} " + " ".join(f"{verb:>7}" for verb in VERBS))
    medians = {}
    for name, cycles in timings.items():
        medians[name] = statistics.median(sum(cycle.values()) for cycle in cycles) * 1000
        verbs = [statistics.median(cycle[verb] for cycle in cycles) * 1000 for verb in VERBS]
        print(f"  {name:<12} {medians[name]:7.1f} " + " ".join(f"{v:7.1f}" for v in verbs))
    if "runc" in medians:
        for name, median in medians.items():
            if name != "runc":
                print(f"ratio {name} / runc: {median / medians['runc']:.2f}")


def parse_import_times(stderr: str) -> list[tuple[int, int, str]]:
    """Return (cumulative, own, module) in microseconds from ``-X importtime`` output."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, module = line.removeprefix("import time:").split("|")
        rows.append((int(cumulative), int(own), module.rstrip()))
    return rows


def print_import_times(workdir: Path, rootfs: Path, cgroup_parent: str, count: int) -> None:
    """Run one ketch-runc cycle under ``python -X importtime`` and print, per verb, the
    total import time and the slowest imports."""
    prefix = [sys.executable, "-X", "importtime", "-m", "ketch.runtime.cli"]
    runtime = Runtime("ketch-runc", prefix, workdir, cgroup_parent)
    try:
        runtime.cycle(make_bundle(workdir, "importtime", rootfs))
    finally:
        runtime.close()
    for verb in ("create", "start", "delete"):
        rows = parse_import_times(runtime.stderr[verb])
        top_level = sum(cumulative for cumulative, _, module in rows if not module.startswith("  "))
        print(f"ketch-runc {verb}: {top_level / 1000:.1f} ms of imports; slowest (ms):")
        print(f"  {'cumulative':>10} {'own':>7}  module")
        for cumulative, own, module in sorted(rows, reverse=True)[:count]:
            print(f"  {cumulative / 1000:10.1f} {own / 1000:7.1f}  {module.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed cycles per runtime")
    parser.add_argument(
        "--importtime",
        action="store_true",
        help="print where ketch-runc's import time goes, per verb, instead of timing",
    )
    parser.add_argument("--top", type=int, default=12, help="imports listed per verb")
    options = parser.parse_args()

    syscalls.set_child_subreaper()
    workdir = Path(tempfile.mkdtemp(prefix="ketch-cycle-", dir="/tmp"))
    cgroup_parent = f"ketch-bench-{secrets.token_hex(4)}"
    runtimes: dict[str, Runtime] = {}
    try:
        rootfs = make_busybox_rootfs(workdir / "rootfs")
        if options.importtime:
            print_import_times(workdir, rootfs, cgroup_parent, options.top)
            return
        runtimes, bundles = usable_runtimes(workdir, rootfs, cgroup_parent)
        timings: dict[str, list[dict[str, float]]] = {name: [] for name in runtimes}
        for _ in range(options.runs):
            for name, runtime in runtimes.items():
                timings[name].append(runtime.cycle(bundles[name]))
        print_results(timings, options.runs)
    finally:
        for runtime in runtimes.values():
            runtime.close()
        remove_cgroup_parent(cgroup_parent)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
