"""Build base images with no internet and push them to a registry: busybox from the
host's static busybox, and (with ``--debian``) a minimal Debian from the package mirror.

The image has one gzip layer::

    bin/busybox            a copy of the host binary (Debian's busybox-static)
    bin/<applet>           a symlink to busybox for every applet ``busybox --list`` names
    etc/passwd, etc/group  root, a few system accounts and nobody
    tmp/ (1777), root/ (0700), dev/, proc/, sys/

and a config with ``Cmd ["sh"]`` and a standard ``PATH``. Every timestamp is the busybox
binary's modification time and the gzip header carries none, so the same binary always
gives the same digests and pushing again uploads nothing new.

The Debian image is ``debootstrap --variant=minbase <suite>`` from the mirror that
``/etc/apt/sources.list`` or ``/etc/apt/sources.list.d/*`` names, without apt's package
lists and caches, in one gzip layer with ``Cmd ["bash"]``. debootstrap takes tens of
seconds, so the layer is cached and later runs push the cached one::

    /var/cache/ketch-base/
        debian-<suite>-<arch>.tar.gz     the layer
        debian-<suite>-<arch>.json       its diff ID, suite, mirror and creation time
        work-<random>/                   a debootstrap in progress, removed afterwards

Usage: ``python -m ketch.images.baseimage --registry 127.0.0.1:5000
[--name library/busybox:latest] [--busybox /bin/busybox]
[--debian [--debian-name library/debian:bookworm] [--suite bookworm] [--mirror URL]]``
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import logging
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ketch.errors import InvalidArgument, KetchError
from ketch.images.endpoints import endpoints_for
from ketch.images.manifest import DOCKER_MANIFEST, host_platform
from ketch.images.reference import parse_reference
from ketch.images.registry import open_session, push_image

log = logging.getLogger(__name__)

DEFAULT_NAME = "library/busybox:latest"
DEFAULT_BUSYBOX = Path("/bin/busybox")
DEFAULT_SUITE = "bookworm"
DEFAULT_DEBIAN_NAME = f"library/debian:{DEFAULT_SUITE}"
DEFAULT_CACHE = Path("/var/cache/ketch-base")
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIRECTORY = Path("/etc/apt/sources.list.d")
DEBOOTSTRAP_TIMEOUT_SECONDS = 1800
# Paths apt refills on its first "apt-get update"; docker's Debian images leave them out.
APT_STATE = ("var/lib/apt/lists", "var/cache/apt")
PATH_VARIABLE = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
tty:x:5:
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""


def list_applets(busybox: Path) -> list[str]:
    """Return the applet names that ``busybox --list`` prints, without busybox itself."""
    try:
        result = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.CalledProcessError) as error:
        raise InvalidArgument(f"cannot list the applets of {busybox}: {error}") from None
    applets = {line.strip() for line in result.stdout.splitlines()}
    applets.discard("")
    applets.discard("busybox")
    invalid = sorted(name for name in applets if "/" in name or name in (".", ".."))
    if invalid:
        raise InvalidArgument(f"{busybox} --list printed invalid applet names: {invalid}")
    return sorted(applets)


def build_layer(busybox: Path) -> tuple[bytes, str]:
    """Return the gzip-compressed layer and its diff ID (the digest of the plain tar)."""
    try:
        binary = busybox.read_bytes()
        mtime = int(busybox.stat().st_mtime)
    except OSError as error:
        raise InvalidArgument(f"cannot read busybox binary {busybox}: {error}") from None
    applets = list_applets(busybox)

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, mtime
            info.linkname = target
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for directory, mode in (("bin", 0o755), ("dev", 0o755), ("etc", 0o755),
                                ("proc", 0o555), ("root", 0o700), ("sys", 0o555),
                                ("tmp", 0o1777)):  # fmt: skip
            add(directory, tarfile.DIRTYPE, mode)
        add("bin/busybox", tarfile.REGTYPE, 0o755, binary)
        for applet in applets:
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP.encode())

    plain = buffer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(plain).hexdigest()
    return gzip.compress(plain, mtime=0), diff_id


def build_config(diff_id: str, created: datetime, command: str = "sh") -> bytes:
    """Return the image config JSON for the one layer with ``diff_id``."""
    timestamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {
        "architecture": host_platform().architecture,
        "os": "linux",
        "created": timestamp,
        "config": {"Env": [PATH_VARIABLE], "Cmd": [command]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": timestamp, "created_by": "ketch.images.baseimage"}],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class CachedLayer:
    path: Path  # the gzip layer
    diff_id: str
    created: datetime


def find_debian_mirror(suite: str, sources: list[Path] | None = None) -> str:
    """Return the first Debian mirror URL that the apt sources list for ``suite``.

    Reads one-line ``deb URL SUITE ...`` entries and deb822 ``.sources`` stanzas.
    """
    if sources is None:
        sources = [APT_SOURCES, *sorted(APT_SOURCES_DIRECTORY.glob("*.list")),
                   *sorted(APT_SOURCES_DIRECTORY.glob("*.sources"))]  # fmt: skip
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        mirror = _mirror_in_sources(text, suite) if path.suffix == ".sources" else None
        mirror = mirror or _mirror_in_list(text, suite)
        if mirror:
            return mirror
    raise InvalidArgument(
        f"no Debian mirror for {suite!r} in {APT_SOURCES} or {APT_SOURCES_DIRECTORY}: "
        "pass --mirror URL"
    )


def _mirror_in_list(text: str, suite: str) -> str | None:
    for line in text.splitlines():
        fields = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(fields) >= 3 and fields[0] == "deb" and fields[2] == suite:
            return fields[1]
    return None


def _mirror_in_sources(text: str, suite: str) -> str | None:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, separator, value = line.partition(":")
            if separator and not line.startswith(("#", " ")):
                fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def debian_layer(suite: str, mirror: str, cache: Path) -> CachedLayer:
    """Return the cached Debian layer for ``suite``, making it with debootstrap first
    when the cache has none."""
    stem = f"debian-{suite}-{host_platform().architecture}"
    layer, metadata = cache / f"{stem}.tar.gz", cache / f"{stem}.json"
    if layer.is_file() and metadata.is_file():
        recorded = json.loads(metadata.read_text())
        log.info("using the cached Debian layer %s", layer)
        return CachedLayer(layer, recorded["diff_id"], datetime.fromisoformat(recorded["created"]))

    cache.mkdir(parents=True, exist_ok=True, mode=0o755)
    work = cache / f"work-{secrets.token_hex(4)}"
    try:
        rootfs = work / "rootfs"
        _run_debootstrap(suite, mirror, rootfs)
        for relative in APT_STATE:
            _empty_directory(rootfs / relative)
        partial = work / "layer.tar.gz"
        diff_id = _tar_rootfs(rootfs, partial)
        created = datetime.now(UTC).replace(microsecond=0)
        partial.rename(layer)
        record = {"diff_id": diff_id, "suite": suite, "mirror": mirror,
                  "created": created.isoformat()}  # fmt: skip
        metadata.write_text(json.dumps(record, indent=1) + "\n")
        return CachedLayer(layer, diff_id, created)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_debootstrap(suite: str, mirror: str, rootfs: Path) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise InvalidArgument("debootstrap is not installed: apt-get install debootstrap")
    command = [debootstrap, "--variant=minbase", suite, str(rootfs), mirror]
    log.info("running %s", " ".join(command))
    try:
        subprocess.run(
            command, capture_output=True, text=True, check=True,
            timeout=DEBOOTSTRAP_TIMEOUT_SECONDS,
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        tail = (error.stdout + error.stderr).strip().splitlines()[-5:]
        raise InvalidArgument(f"debootstrap of {suite} from {mirror} failed: {tail}") from None
    except subprocess.TimeoutExpired:
        raise InvalidArgument(
            f"debootstrap of {suite} from {mirror} timed out after {DEBOOTSTRAP_TIMEOUT_SECONDS} s"
        ) from None


def _empty_directory(directory: Path) -> None:
    if not directory.is_dir() or directory.is_symlink():
        return
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _tar_rootfs(rootfs: Path, destination: Path) -> str:
    """Write ``rootfs`` as a gzip layer to ``destination``; return the diff ID.

    GNU tar does the walk because it keeps hard links, device nodes and xattrs, and
    sorted names with numeric owners make the tar depend on the files alone.
    """
    tar_command = [
        "tar", "--create", "--sort=name", "--numeric-owner", "--xattrs",
        "--xattrs-include=*", "--format=pax", "--pax-option=delete=atime,delete=ctime",
        "--directory", str(rootfs), ".",
    ]  # fmt: skip
    digest = hashlib.sha256()
    with (
        subprocess.Popen(tar_command, stdout=subprocess.PIPE) as tar,
        open(destination, "wb") as out,
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as compressed,
    ):
        assert tar.stdout is not None
        while chunk := tar.stdout.read(1024 * 1024):
            digest.update(chunk)
            compressed.write(chunk)
    if tar.returncode != 0:
        raise InvalidArgument(f"tar of the Debian rootfs {rootfs} failed ({tar.returncode})")
    return "sha256:" + digest.hexdigest()


async def push_debian_image(
    registry: str, name: str, suite: str, mirror: str | None, cache: Path
) -> str:
    """Push a minimal Debian ``suite`` as ``<registry>/<name>``; return the manifest digest."""
    reference = parse_reference(f"{registry}/{name}")
    if reference.digest or not reference.tag:
        raise InvalidArgument(f"--debian-name {name!r} must end in a tag, not a digest")
    mirror = mirror or find_debian_mirror(suite)
    cached = await asyncio.to_thread(debian_layer, suite, mirror, cache)
    layer = await asyncio.to_thread(cached.path.read_bytes)
    config = build_config(cached.diff_id, cached.created, command="bash")
    endpoint = endpoints_for(reference.domain, (), ())[0]
    async with open_session() as session:
        return await push_image(
            session, endpoint, reference.path, reference.tag, config, [layer], DOCKER_MANIFEST
        )


async def push_base_image(registry: str, name: str, busybox: Path) -> str:
    """Build the image and push it as ``<registry>/<name>``; return the manifest digest."""
    reference = parse_reference(f"{registry}/{name}")
    if reference.digest or not reference.tag:
        raise InvalidArgument(f"--name {name!r} must end in a tag, not a digest")
    layer, diff_id = build_layer(busybox)
    created = datetime.fromtimestamp(int(busybox.stat().st_mtime), UTC)
    config = build_config(diff_id, created)
    endpoint = endpoints_for(reference.domain, (), ())[0]
    async with open_session() as session:
        return await push_image(
            session, endpoint, reference.path, reference.tag, config, [layer], DOCKER_MANIFEST
        )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make-base-image",
        description="Build base images (busybox, and Debian with --debian) and push them.",
    )
    parser.add_argument(
        "--registry", required=True, help="registry address, host:port (127.0.0.1:5000)"
    )
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"repository and tag to push (default {DEFAULT_NAME})"
    )
    parser.add_argument(
        "--busybox",
        type=Path,
        default=DEFAULT_BUSYBOX,
        help=f"static busybox binary to put in the image (default {DEFAULT_BUSYBOX})",
    )
    parser.add_argument(
        "--debian",
        action="store_true",
        help="also push a minimal Debian made by debootstrap (cached; the first run takes "
        "tens of seconds)",
    )
    parser.add_argument(
        "--debian-name",
        default=DEFAULT_DEBIAN_NAME,
        help=f"repository and tag of the Debian image (default {DEFAULT_DEBIAN_NAME})",
    )
    parser.add_argument(
        "--suite", default=DEFAULT_SUITE, help=f"Debian suite (default {DEFAULT_SUITE})"
    )
    parser.add_argument(
        "--mirror", help="Debian mirror URL (default: the one the apt sources name for --suite)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"directory for the cached Debian layer (default {DEFAULT_CACHE})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        digest = asyncio.run(push_base_image(arguments.registry, arguments.name, arguments.busybox))
        print(f"{arguments.registry}/{arguments.name} {digest}")
        if arguments.debian:
            digest = asyncio.run(
                push_debian_image(
                    arguments.registry,
                    arguments.debian_name,
                    arguments.suite,
                    arguments.mirror,
                    arguments.cache,
                )
            )
            print(f"{arguments.registry}/{arguments.debian_name} {digest}")
    except KetchError as error:
        print(f"make-base-image: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
