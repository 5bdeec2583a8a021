"""Build a busybox image from the host's static busybox and push it to a registry.

The image has one gzip layer::

    bin/busybox            a copy of the host binary (Debian's busybox-static)
    bin/<applet>           a symlink to busybox for every applet ``busybox --list`` names
    etc/passwd, etc/group  root, a few system accounts and nobody
    tmp/ (1777), root/ (0700), dev/, proc/, sys/

and a config with ``Cmd ["sh"]`` and a standard ``PATH``. Every timestamp is the busybox
binary's modification time and the gzip header carries none, so the same binary always
gives the same digests and pushing again uploads nothing new.

Usage: ``python -m ketch.images.baseimage --registry 127.0.0.1:5000
[--name library/busybox:latest] [--busybox /bin/busybox]``
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from ketch.errors import InvalidArgument, KetchError
from ketch.images.manifest import DOCKER_MANIFEST, host_platform
from ketch.images.reference import parse_reference
from ketch.images.registry import endpoints_for, open_session, push_image

DEFAULT_NAME = "library/busybox:latest"
DEFAULT_BUSYBOX = Path("/bin/busybox")
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


def build_config(diff_id: str, created: datetime) -> bytes:
    """Return the image config JSON for the busybox layer with ``diff_id``."""
    timestamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {
        "architecture": host_platform().architecture,
        "os": "linux",
        "created": timestamp,
        "config": {"Env": [PATH_VARIABLE], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": timestamp, "created_by": "ketch.images.baseimage"}],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


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
        description="Build busybox from the host's busybox-static and push it to a registry.",
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        digest = asyncio.run(push_base_image(arguments.registry, arguments.name, arguments.busybox))
    except KetchError as error:
        print(f"make-base-image: {error}", file=sys.stderr)
        return 1
    print(f"{arguments.registry}/{arguments.name} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
