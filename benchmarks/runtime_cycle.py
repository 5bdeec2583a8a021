"""Time one container's full cycle through each OCI runtime's command line.

A cycle is ``create`` -> ``start`` -> wait for the process to exit -> ``delete`` of
``true`` in a busybox bundle, each verb a separate run of the runtime's binary, as
containerd's shim and dockerd call it. Every runtime gets the same config.json (the
``runc spec`` default with the terminal off), its own ``--root`` and a relative
cgroupsPath, so the containers' cgroups go under this process's own. The runs alternate
between the runtimes so that the machine's state affects all alike. The script prints
the median cycle and the median of each verb per runtime, and the ratio to runc. A last
row, "ketch library", runs the same cycle through ketch's runtime library inside this
process, which shows what the work costs without a Python start-up per verb.

This process is a child subreaper, so each container's process is reparented to it when
``create`` exits and the wait is a plain ``waitpid``.

``--importtime`` runs ketch-runc's cycles under ``python -X importtime`` instead and
prints, per verb, the median total import time and the slowest imports (cumulative).
``--compare NAME=PATH`` times another runtime binary in the same runs, and ``--log-json``
passes ``--log FILE --log-format json`` on every call, as containerd's shim does.

Run it as root:

    .venv/bin/python benchmarks/runtime_cycle.py [--runs 50] [--importtime] [--log-json]
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
from support.cgroups import own_cgroup_directories  # noqa: E402
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


class LibraryRuntime(Runtime):
    """ketch's runtime library called in this process, as the supervisor calls it.

    The verbs run with the library already imported and no process per verb, so the
    difference to ketch-runc's cycle is what a process per verb costs: the interpreter's
    start-up, the imports and the argument parsing.
    """

    def __init__(self, workdir: Path, cgroup_parent: str) -> None:
        from ketch.runtime import Runtime as KetchRuntime

        super().__init__("ketch library", [], workdir, cgroup_parent)
        self.library = KetchRuntime(self.root)

    def cycle(self, bundle: Path) -> dict[str, float]:
        self.counter += 1
        container_id = f"library-{self.counter}"
        self._write_cgroups_path(bundle, container_id)
        stdio = (self.null, self.null, self.null)
        times = {}

        started = time.perf_counter()
        pid = self.library.create(container_id, bundle, stdio=stdio)
        times["create"] = time.perf_counter() - started

        started = time.perf_counter()
        self.library.start(container_id)
        times["start"] = time.perf_counter() - started

        started = time.perf_counter()
        os.waitpid(pid, 0)
        times["wait"] = time.perf_counter() - started

        started = time.perf_counter()
        self.library.delete(container_id)
        times["delete"] = time.perf_counter() - started
        return times


def make_bundle(workdir: Path, name: str, rootfs: Path) -> Path:
    bundle = workdir / "bundles" / name
    bundle.mkdir(parents=True)
    config = bundle_config(rootfs, ["true"])
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def remove_cgroup_parent(relative: str) -> None:
    for directory in own_cgroup_directories(relative):
        for parent, _, _ in sorted(os.walk(directory), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(parent)
            except OSError as error:
                print(f"failed to remove cgroup {parent}: {error}", file=sys.stderr)


def usable_runtimes(
    workdir: Path, rootfs: Path, cgroup_parent: str, extra: dict[str, Path], log_json: bool
) -> tuple[dict[str, Runtime], dict[str, Path]]:
    """Return the runtimes whose warm-up cycles succeed, with a bundle each, and print why
    the others are skipped (crun 1.8 rejects a hybrid cgroup layout, for one). ``extra``
    adds binaries to time beside the usual ones, by name. With ``log_json`` every call
    gets ``--log FILE --log-format json``, as containerd's runc shim passes them."""
    runtimes, bundles = {}, {}
    for name, binary in {**RUNTIMES, **extra}.items():
        if not binary.exists():
            print(f"{name}: not installed at {binary}, skipped")
            continue
        command = [str(binary)]
        if log_json:
            command += ["--log", str(workdir / f"{name}.log"), "--log-format", "json"]
        runtime = Runtime(name, command, workdir, cgroup_parent)
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
    library = LibraryRuntime(workdir, cgroup_parent)
    bundles[library.name] = make_bundle(workdir, "library", rootfs)
    for _ in range(WARM_UP_RUNS):
        library.cycle(bundles[library.name])
    runtimes[library.name] = library
    return runtimes, bundles


def print_results(timings: dict[str, list[dict[str, float]]], runs: int) -> None:
    print(f"create -> start -> wait -> delete of `true`, median of {runs} cycles (ms):")
    print(f"  {'runtime':<14} {'cycle':>7} " + " ".join(f"{verb:>7}" for verb in VERBS))
    medians = {}
    for name, cycles in timings.items():
        medians[name] = statistics.median(sum(cycle.values()) for cycle in cycles) * 1000
        verbs = [statistics.median(cycle[verb] for cycle in cycles) * 1000 for verb in VERBS]
        print(f"  {name:<14} {medians[name]:7.1f} " + " ".join(f"{v:7.1f}" for v in verbs))
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


def print_import_times(
    workdir: Path, rootfs: Path, cgroup_parent: str, cycles: int, count: int
) -> None:
    """Run ketch-runc cycles under ``python -X importtime`` and print, per verb, the median
    total import time and the imports with the largest median cumulative time.

    create's figures include the imports of the container's init, which inherits the
    option and stderr and imports its own modules after the fork, while create waits
    for its ``ready``. So they add up to more than create's own import time before the
    fork.
    """
    launcher = RUNTIMES["ketch-runc"]
    first_line = launcher.read_text().split("\n", 1)[0] if launcher.exists() else ""
    if first_line.endswith(" -IS"):
        # The script scripts/setup installs, run with the interpreter options it names.
        prefix = [sys.executable, "-I", "-S", "-X", "importtime", str(launcher)]
    else:
        prefix = [sys.executable, "-X", "importtime", "-m", "ketch.runtime.cli"]
    runtime = Runtime("ketch-runc", prefix, workdir, cgroup_parent)
    bundle = make_bundle(workdir, "importtime", rootfs)
    verbs = ("create", "start", "delete")
    totals: dict[str, list[int]] = {verb: [] for verb in verbs}
    modules: dict[str, dict[str, list[int]]] = {verb: {} for verb in verbs}
    try:
        for _ in range(cycles):
            runtime.cycle(bundle)
            for verb in verbs:
                rows = parse_import_times(runtime.stderr[verb])
                # importtime indents a module by two spaces per level of nesting below
                # the one space after "|", so a top-level import has exactly one.
                top_level = [cumulative for cumulative, _, name in rows if name[1:2] != " "]
                totals[verb].append(sum(top_level))
                for cumulative, _, name in rows:
                    modules[verb].setdefault(name.strip(), []).append(cumulative)
    finally:
        runtime.close()
    for verb in verbs:
        total = statistics.median(totals[verb]) / 1000
        print(f"ketch-runc {verb}: {total:.1f} ms of imports (median of {cycles}); slowest:")
        medians = {name: statistics.median(values) for name, values in modules[verb].items()}
        for name in sorted(medians, key=medians.__getitem__, reverse=True)[:count]:
            print(f"  {medians[name] / 1000:7.1f} ms  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed cycles per runtime")
    parser.add_argument(
        "--importtime",
        action="store_true",
        help="print where ketch-runc's import time goes, per verb, instead of timing",
    )
    parser.add_argument("--top", type=int, default=12, help="imports listed per verb")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also time the runtime binary PATH under NAME (repeatable), such as another "
        "build of ketch-runc",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        help="pass --log FILE --log-format json on every runtime call, as containerd's runc "
        "shim and dockerd do",
    )
    options = parser.parse_args()
    extra = {}
    for entry in options.compare:
        name, equals, path = entry.partition("=")
        if not equals or not name or not path:
            parser.error(f"invalid --compare {entry!r}: expected NAME=PATH")
        extra[name] = Path(path)

    syscalls.set_child_subreaper()
    workdir = Path(tempfile.mkdtemp(prefix="ketch-cycle-", dir="/tmp"))
    cgroup_parent = f"ketch-bench-{secrets.token_hex(4)}"
    runtimes: dict[str, Runtime] = {}
    try:
        rootfs = make_busybox_rootfs(workdir / "rootfs")
        if options.importtime:
            print_import_times(workdir, rootfs, cgroup_parent, options.runs, options.top)
            return
        runtimes, bundles = usable_runtimes(workdir, rootfs, cgroup_parent, extra, options.log_json)
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
