"""Time pulling and pushing a ~200 MB image of 5 layers: ketch against skopeo.

The script makes the image locally (each layer: files of 1 MiB, three quarters random
bytes and one quarter text, gzip level 6), pushes it to a docker-registry on 127.0.0.1 and
then, run after run with the commands alternating:

* pull: ketch's ImageStore.pull into a new store (layers unpacked into snapshots), against
  ``skopeo copy`` to an OCI layout directory and to containers-storage (overlay driver,
  private graph and run roots; skipped with a message if that fails here);
* push: ketch's ImageStore.push, against ``skopeo copy`` from the OCI directory, each to a
  new, empty registry so that no blob exists there yet;
* with ``--docker``: Debian's dockerd 20.10, started in a network namespace of its own
  with a registry of its own there (seeded by skopeo with the same image), times
  ``docker pull`` and ``docker push`` to an empty registry in the same way.

It prints medians, ratios, and where ketch's pull time goes: the phases seen in its progress
messages, and CPU time against wall time. The CPU time is split by thread. The event loop
thread receives the blobs and writes them to the content store. The unpack threads also
hash the blobs they read from the downloads. The blob commits hash what the unpacks had
not reached, then fsync. The figures of the last two come from the debug log records of
``ketch.images``. It also times the unpack of one layer against ``tar -xzf`` of the same
blob. Run it as root (unpacking sets ownership) with skopeo installed:

    .venv/bin/python benchmarks/pull_push.py [--runs 3] [--layer-mib 40] [--docker]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import logging
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from run_start import DOCKER_CGROUP_PARENT, Dockerd  # noqa: E402

from ketch.images import ImageStore  # noqa: E402
from ketch.images.endpoints import Endpoint  # noqa: E402
from ketch.images.layers import unpack_layer  # noqa: E402
from ketch.images.registry import open_session, push_image  # noqa: E402
from ketch.linux.syscalls import MNT_DETACH, umount  # noqa: E402
from support.cgroups import remove_cgroup_trees  # noqa: E402
from support.netns import NetworkNamespace, network_namespace  # noqa: E402
from support.registry import Registry, start_registry  # noqa: E402

LAYERS = 5
FILE_SIZE = 1024 * 1024
REPOSITORY = "bench/image"
TAG = "v1"
SKOPEO_TIMEOUT_SECONDS = 600


def make_layer(seed: int, size_mib: int) -> bytes:
    """Return a gzip layer tar of ``size_mib`` files of 1 MiB, 3/4 random and 1/4 text."""
    generator = random.Random(seed)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        directory = tarfile.TarInfo(f"layer{seed}")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(directory)
        text = (f"line of layer {seed} " * 8 + "\n").encode()
        for number in range(size_mib):
            random_part = generator.randbytes(FILE_SIZE * 3 // 4)
            text_part = (text * (FILE_SIZE // 4 // len(text) + 1))[: FILE_SIZE - len(random_part)]
            info = tarfile.TarInfo(f"layer{seed}/file{number:04d}")
            info.size, info.mode, info.mtime = FILE_SIZE, 0o644, 1_700_000_000
            archive.addfile(info, io.BytesIO(random_part + text_part))
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def make_config(layers: list[bytes]) -> bytes:
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(x)).hexdigest() for x in layers]
    document = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(document).encode()


def seed_registry(address: str, layers: list[bytes], config: bytes) -> None:
    async def push() -> None:
        async with open_session() as session:
            endpoint = Endpoint(f"http://{address}", address)
            await push_image(session, endpoint, REPOSITORY, TAG, config, layers)

    asyncio.run(push())


def open_store(root: Path) -> tuple[ImageStore, sqlite3.Connection]:
    root.mkdir(parents=True)
    db = sqlite3.connect(root / "ketch.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return ImageStore(root / "images", db), db


def close_store(store: ImageStore, db: sqlite3.Connection, root: Path) -> None:
    db.close()
    remove_tree(root)


def remove_tree(root: Path) -> None:
    """Unmount what a run left mounted under ``root`` (deepest first), then delete it."""
    with open("/proc/self/mountinfo") as mountinfo:
        targets = [line.split()[4] for line in mountinfo]
    prefix = str(root)
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        umount(target, MNT_DETACH)
    shutil.rmtree(root, ignore_errors=True)


class CpuClock:
    """Wall time and CPU time (this process and its children) of one block."""

    def __enter__(self) -> CpuClock:
        self._wall = time.perf_counter()
        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (
            own.ru_utime - self._self.ru_utime + own.ru_stime - self._self.ru_stime
            + children.ru_utime - self._children.ru_utime
            + children.ru_stime - self._children.ru_stime
        )  # fmt: skip


def skopeo(*arguments: str) -> None:
    command = ["skopeo", "--insecure-policy", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")


class StageCpu(logging.Handler):
    """Logging handler that sums the ``cpu_seconds`` of debug records by their ``pull_stage``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        stage = getattr(record, "pull_stage", None)
        if stage is not None:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + record.cpu_seconds


def ketch_pull(address: str, work: Path, phases: list[dict[str, float]]) -> CpuClock:
    root = work / "ketch-pull"
    store, db = open_store(root)
    stamps: list[tuple[float, str]] = []
    stages = StageCpu()
    logger = logging.getLogger("ketch.images")
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(stages)
    try:
        with CpuClock() as clock:
            start = time.perf_counter()
            loop_cpu = time.thread_time()

            def record(message: dict[str, Any]) -> None:
                stamps.append((time.perf_counter() - start, str(message.get("status", ""))))

            asyncio.run(store.pull(f"{address}/{REPOSITORY}:{TAG}", record))
            loop_cpu = time.thread_time() - loop_cpu
    finally:
        logger.removeHandler(stages)
        logger.setLevel(previous_level)
        close_store(store, db, root)
    phases.append(pull_phases(stamps, clock.wall))
    phases[-1]["CPU: event loop thread"] = loop_cpu
    for stage, seconds in sorted(stages.seconds.items()):
        phases[-1][f"CPU: {stage} threads"] = seconds
    phases[-1]["CPU: other threads"] = clock.cpu - loop_cpu - sum(stages.seconds.values())
    return clock


def pull_phases(stamps: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Split a pull by its progress messages: manifest and config, downloads, the rest."""

    def first(status: str) -> float:
        return min((t for t, s in stamps if s.startswith(status)), default=0.0)

    def last(status: str) -> float:
        return max((t for t, s in stamps if s.startswith(status)), default=0.0)

    return {
        "until first layer request": first("Pulling fs layer"),
        "until last layer downloaded": last("Download complete"),
        "until last layer unpacked": last("Pull complete"),
        "total": total,
    }


def skopeo_pull_oci(address: str, work: Path) -> CpuClock:
    target = work / "skopeo-oci"
    try:
        with CpuClock() as clock:
            skopeo("copy", "--src-tls-verify=false", f"docker://{address}/{REPOSITORY}:{TAG}",
                   f"oci:{target}:{TAG}")  # fmt: skip
    finally:
        remove_tree(target)
    return clock


def skopeo_pull_storage(address: str, work: Path) -> CpuClock:
    root = work / "skopeo-storage"
    store = f"containers-storage:[overlay@{root / 'graph'}+{root / 'run'}]{REPOSITORY}:{TAG}"
    try:
        with CpuClock() as clock:
            skopeo(
                "copy", "--src-tls-verify=false", f"docker://{address}/{REPOSITORY}:{TAG}", store
            )
    finally:
        remove_tree(root)
    return clock


def with_empty_registry(work: Path, body: Callable[[str], CpuClock]) -> CpuClock:
    registry: Registry = start_registry(work / "push-registry")
    try:
        return body(registry.address)
    finally:
        registry.stop()
        shutil.rmtree(work / "push-registry", ignore_errors=True)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def report(title: str, results: dict[str, list[CpuClock]], skipped: dict[str, str]) -> None:
    print(f"\n{title}:")
    for name, clocks in results.items():
        wall = median_ms([c.wall for c in clocks])
        cpu = median_ms([c.cpu for c in clocks])
        print(f"  {name:<34} {wall:9.0f} ms wall {cpu:9.0f} ms CPU")
    for name, reason in skipped.items():
        print(f"  {name:<34} skipped: {reason}")
    ketch = median_ms([c.wall for c in results["ketch"]])
    for name, clocks in results.items():
        if name != "ketch":
            print(f"  ratio ketch / {name}: {ketch / median_ms([c.wall for c in clocks]):.2f}")


def measure_unpack(layer: bytes, work: Path) -> None:
    """Print ketch's unpack of one layer against ``tar -xzf`` of the same blob."""
    blob = work / "layer.tar.gz"
    blob.write_bytes(layer)
    size_mib = len(gzip.decompress(layer)) / 2**20
    timings: dict[str, list[float]] = {"ketch unpack_layer": [], "tar -xzf": []}

    for _ in range(3):
        target = work / "unpack"
        target.mkdir()
        start = time.perf_counter()
        unpack_layer(blob, target, layer="benchmark")
        timings["ketch unpack_layer"].append(time.perf_counter() - start)
        shutil.rmtree(target)
        target.mkdir()
        start = time.perf_counter()
        subprocess.run(["tar", "-xzf", str(blob), "-C", str(target)], check=True)
        timings["tar -xzf"].append(time.perf_counter() - start)
        shutil.rmtree(target)

    print(f"\nunpack of one layer ({size_mib:.0f} MiB uncompressed), median of 3:")
    for name, values in timings.items():
        seconds = statistics.median(values)
        print(f"  {name:<34} {seconds * 1000:9.0f} ms {size_mib / seconds:7.0f} MiB/s")

    data = gzip.decompress(layer)
    start = time.perf_counter()
    hashlib.sha256(layer).hexdigest()
    hashlib.sha256(data).hexdigest()
    hashing = time.perf_counter() - start
    start = time.perf_counter()
    gzip.decompress(layer)
    inflating = time.perf_counter() - start
    print(f"  sha256 of blob and tar (digest + diff ID) {hashing * 1000:6.0f} ms")
    print(f"  gzip decompress in Python              {inflating * 1000:6.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per command (default 3)")
    parser.add_argument(
        "--layer-mib", type=int, default=40, help="MiB of files in each of the 5 layers"
    )
    parser.add_argument(
        "--docker", action="store_true", help="also time dockerd (docker.io must be installed)"
    )
    options = parser.parse_args()
    if shutil.which("skopeo") is None:
        sys.exit("skopeo is not installed (apt-get install skopeo)")

    with tempfile.TemporaryDirectory(prefix="ketch-bench-pull-") as temporary:
        work = Path(temporary)
        started = time.perf_counter()
        layers = [make_layer(seed, options.layer_mib) for seed in range(LAYERS)]
        config = make_config(layers)
        compressed = sum(len(x) for x in layers) / 2**20
        made_in = time.perf_counter() - started
        print(
            f"image: {LAYERS} layers, {LAYERS * options.layer_mib} MiB uncompressed, "
            f"{compressed:.0f} MiB compressed (made in {made_in:.0f} s)"
        )

        source = start_registry(work / "source-registry")
        try:
            seed_registry(source.address, layers, config)
            pulls = run_pulls(source.address, work, options.runs)
            pushes = run_pushes(source.address, work, options.runs)
            if options.docker:
                run_docker(source.address, work, options.runs, pulls, pushes)
        finally:
            source.stop()
        measure_unpack(layers[0], work)


def run_pulls(address: str, work: Path, runs: int) -> float:
    """Time the pulls, print the report and return ketch's median in ms."""
    results: dict[str, list[CpuClock]] = {"ketch": [], "skopeo copy to oci dir": []}
    skipped: dict[str, str] = {}
    phases: list[dict[str, float]] = []
    storage_name = "skopeo copy to containers-storage"
    for _ in range(runs):
        results["ketch"].append(ketch_pull(address, work, phases))
        results["skopeo copy to oci dir"].append(skopeo_pull_oci(address, work))
        if storage_name not in skipped:
            try:
                results.setdefault(storage_name, []).append(skopeo_pull_storage(address, work))
            except RuntimeError as error:
                skipped[storage_name] = str(error)
                results.pop(storage_name, None)
    report(f"pull, median of {runs} runs", results, skipped)
    print("  ketch pull phases (median, from its progress messages and log records):")
    for key in phases[0]:
        print(f"    {key:<32} {median_ms([p.get(key, 0.0) for p in phases]):9.0f} ms")
    return median_ms([c.wall for c in results["ketch"]])


def run_pushes(address: str, work: Path, runs: int) -> float:
    """Time the pushes, print the report and return ketch's median in ms."""
    layout = work / "push-source-oci"
    skopeo("copy", "--src-tls-verify=false", f"docker://{address}/{REPOSITORY}:{TAG}",
           f"oci:{layout}:{TAG}")  # fmt: skip
    root = work / "ketch-push"
    store, db = open_store(root)
    try:
        asyncio.run(store.pull(f"{address}/{REPOSITORY}:{TAG}"))
        results: dict[str, list[CpuClock]] = {"ketch": [], "skopeo copy from oci dir": []}
        for _ in range(runs):

            def push_ketch(target: str) -> CpuClock:
                store.tag(f"{address}/{REPOSITORY}:{TAG}", f"{target}/{REPOSITORY}:{TAG}")
                with CpuClock() as clock:
                    asyncio.run(store.push(f"{target}/{REPOSITORY}:{TAG}"))
                return clock

            def push_skopeo(target: str) -> CpuClock:
                with CpuClock() as clock:
                    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:{TAG}",
                           f"docker://{target}/{REPOSITORY}:{TAG}")  # fmt: skip
                return clock

            results["ketch"].append(with_empty_registry(work, push_ketch))
            results["skopeo copy from oci dir"].append(with_empty_registry(work, push_skopeo))
        report(f"push to an empty registry, median of {runs} runs", results, {})
        return median_ms([c.wall for c in results["ketch"]])
    finally:
        close_store(store, db, root)
        shutil.rmtree(layout, ignore_errors=True)


def run_docker(address: str, work: Path, runs: int, ketch_pull: float, ketch_push: float) -> None:
    """Time ``docker pull`` and ``docker push`` against registries in dockerd's namespace."""
    if shutil.which("dockerd") is None:
        print("\ndocker: skipped, dockerd is not installed (apt-get install docker.io)")
        return
    layout = work / "docker-seed-oci"
    skopeo("copy", "--src-tls-verify=false", f"docker://{address}/{REPOSITORY}:{TAG}",
           f"oci:{layout}:{TAG}")  # fmt: skip
    with network_namespace("ketch-bench") as namespace:
        (work / "dockerd").mkdir()
        dockerd = Dockerd(work / "dockerd", namespace)
        source = start_registry(work / "docker-source", netns=namespace.name)
        try:
            seed_in_namespace(namespace, layout, source.address)
            image = f"{source.address}/{REPOSITORY}:{TAG}"
            pulls, pushes = [], []
            for _ in range(runs):
                pulls.append(time_docker(dockerd, "pull", image))
                target = start_registry(work / "docker-target", netns=namespace.name)
                try:
                    pushed = f"{target.address}/{REPOSITORY}:{TAG}"
                    dockerd.docker("tag", image, pushed, check=True, capture_output=True)
                    pushes.append(time_docker(dockerd, "push", pushed))
                    dockerd.docker("rmi", pushed, check=True, capture_output=True)
                finally:
                    target.stop()
                    shutil.rmtree(work / "docker-target", ignore_errors=True)
                dockerd.docker("rmi", image, check=True, capture_output=True)
        finally:
            source.stop()
            dockerd.stop()
            remove_cgroup_trees(DOCKER_CGROUP_PARENT)
            subprocess.run(["umount", "-R", "-l", str(work / "dockerd" / "exec")],
                           capture_output=True)  # fmt: skip
    print(f"\ndocker (dockerd 20.10 in its own network namespace), median of {runs} runs:")
    pull, push = median_ms(pulls), median_ms(pushes)
    print(f"  docker pull                        {pull:9.0f} ms wall")
    print(f"  docker push to an empty registry   {push:9.0f} ms wall")
    print(f"  ratio ketch / docker pull: {ketch_pull / pull:.2f}")
    print(f"  ratio ketch / docker push: {ketch_push / push:.2f}")


def seed_in_namespace(namespace: NetworkNamespace, layout: Path, address: str) -> None:
    command = ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
               f"oci:{layout}:{TAG}", f"docker://{address}/{REPOSITORY}:{TAG}"]  # fmt: skip
    subprocess.run(namespace.command(command), check=True, capture_output=True)


def time_docker(dockerd: Dockerd, verb: str, image: str) -> float:
    started = time.perf_counter()
    result = dockerd.docker(verb, image, capture_output=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"docker {verb} {image} failed: {result.stderr.decode().strip()}")
    return elapsed


if __name__ == "__main__":
    main()
