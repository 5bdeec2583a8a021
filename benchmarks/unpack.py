"""Time ketch's layer unpacking against ``tar -xzf`` of the same gzip layer, and split
ketch's time into its stages.

The layer is the cached Debian base layer (``scripts/make-base-image --debian``) when it
exists, else a generated one of text-like files. Each command runs ``--runs`` times into a
fresh directory, with the page cache warm; the medians are reported, with the ratio
ketch / tar. ``unpack_layer`` ends with syncfs(2) and tar does not, so tar is timed with
and without a ``sync --file-system`` after it.

The stages, each timed alone over the whole layer:

* gunzip: Python's gzip module (zlib) reading the layer, and isal's igzip when the isal
  package is installed, and ``gzip -dc``;
* sha256: hashing the plain tar, which gives the diff ID;
* tar parse: Python's tarfile reading every member and its data, writing nothing.

Usage (as root, from the repository): ``.venv/bin/python benchmarks/unpack.py
[--layer FILE] [--runs 5] [--directory /var/tmp]``
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ketch.images.layers import unpack_layer  # noqa: E402

DEBIAN_LAYER = Path("/var/cache/ketch-base/debian-bookworm-amd64.tar.gz")
CHUNK_SIZE = 1024 * 1024


def generated_layer(path: Path, files: int = 4000, seed: int = 4) -> Path:
    """Write a gzip layer of ``files`` text-like files (about 60 MB plain) to ``path``."""
    generator = random.Random(seed)
    words = [f"word{index}" for index in range(2000)]
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        for index in range(files):
            directory = f"usr/share/data{index % 40}"
            size = generator.choice((200, 2_000, 20_000, 60_000))
            text = " ".join(generator.choices(words, k=size // 8)).encode()[:size]
            info = tarfile.TarInfo(f"{directory}/file{index}.txt")
            info.size, info.mode, info.mtime = len(text), 0o644, 1_700_000_000
            archive.addfile(info, io.BytesIO(text))
    return path


def timed(action: Callable[[], object], runs: int, prepare: Callable[[], object] | None = None):
    samples = []
    for _ in range(runs):
        if prepare is not None:
            prepare()
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def read_all(stream: io.BufferedIOBase | gzip.GzipFile) -> int:
    total = 0
    while chunk := stream.read(CHUNK_SIZE):
        total += len(chunk)
    return total


def plain_size(layer: Path) -> int:
    with gzip.open(layer, "rb") as stream:
        return read_all(stream)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=Path, help="gzip layer to unpack (default: see above)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument(
        "--directory",
        type=Path,
        default=Path("/var/tmp"),
        help="where to unpack (default /var/tmp)",
    )
    arguments = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ketch-unpack-", dir=arguments.directory))
    try:
        layer = arguments.layer
        if layer is None:
            layer = DEBIAN_LAYER if DEBIAN_LAYER.is_file() else generated_layer(work / "gen.tgz")
        report(layer, work, arguments.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(layer: Path, work: Path, runs: int) -> None:
    destination = work / "out"

    def fresh() -> None:
        # Untimed: the previous run's files are deleted and everything is written back,
        # so that no run pays for the one before it.
        shutil.rmtree(destination, ignore_errors=True)
        destination.mkdir()
        subprocess.run(["sync", "--file-system", str(work)], check=True)

    compressed = layer.stat().st_size
    plain = plain_size(layer)
    with tarfile.open(layer, "r:gz") as archive:
        entries = sum(1 for _ in archive)
    try:
        import isal  # noqa: F401

        decompressor = "isal igzip"
    except ImportError:
        decompressor = "Python gzip (zlib)"
    print(f"unpack_layer decompresses gzip with {decompressor}; unpacking into {work}")
    print(f"layer {layer}: {compressed / 1e6:.1f} MB gzip, {plain / 1e6:.1f} MB tar, "
          f"{entries} entries; median of {runs} runs, warm page cache")  # fmt: skip

    def ketch() -> None:
        unpack_layer(layer, destination, layer="benchmark")

    def tar() -> None:
        subprocess.run(["tar", "-xzf", str(layer), "-C", str(destination)], check=True)

    def tar_sync() -> None:
        tar()
        subprocess.run(["sync", "--file-system", str(destination)], check=True)

    results = {
        "ketch unpack_layer (with syncfs)": timed(ketch, runs, fresh),
        "tar -xzf": timed(tar, runs, fresh),
        "tar -xzf + sync -f": timed(tar_sync, runs, fresh),
    }
    for name, seconds in results.items():
        print(f"  {name:36} {seconds:7.3f} s  {plain / seconds / 1e6:7.1f} MB/s of tar")
    ketch_time = results["ketch unpack_layer (with syncfs)"]
    print(f"  ratio ketch / tar -xzf:            {ketch_time / results['tar -xzf']:.2f}")
    print(f"  ratio ketch / tar -xzf + sync:     {ketch_time / results['tar -xzf + sync -f']:.2f}")

    print("stages of ketch's unpack, each alone:")
    stages = stage_times(layer, runs)
    for name, seconds in stages.items():
        print(f"  {name:36} {seconds:7.3f} s  {100 * seconds / ketch_time:5.1f} % of ketch")


def stage_times(layer: Path, runs: int) -> dict[str, float]:
    def zlib_gunzip() -> None:
        with gzip.open(layer, "rb") as stream:
            read_all(stream)  # type: ignore[arg-type]

    def gzip_command() -> None:
        subprocess.run(["sh", "-c", f"gzip -dc '{layer}' > /dev/null"], check=True)

    with gzip.open(layer, "rb") as stream:
        data = stream.read()

    def sha256() -> None:
        hashlib.sha256(data).hexdigest()

    def tar_parse() -> None:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as archive:
            for member in archive:
                if member.isreg():
                    source = archive.extractfile(member)
                    assert source is not None
                    read_all(source)  # type: ignore[arg-type]

    stages = {
        "gunzip, Python gzip (zlib)": timed(zlib_gunzip, runs),
        "gunzip, gzip -dc": timed(gzip_command, runs),
    }
    try:
        from isal import igzip
    except ImportError:
        print("  (isal is not installed: pip install isal to time its igzip)")
    else:

        def isal_gunzip() -> None:
            with igzip.open(layer, "rb") as stream:
                read_all(stream)  # type: ignore[arg-type]

        stages["gunzip, isal igzip"] = timed(isal_gunzip, runs)
    stages["sha256 of the tar"] = timed(sha256, runs)
    stages["tar parse, in memory"] = timed(tar_parse, runs)
    return stages


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("run as root: unpacking keeps owners and device nodes", file=sys.stderr)
        sys.exit(1)
    sys.exit(main())
