"""Layers and images for tests: tars built from a dict of paths, pushed to a registry.

A layer is described as ``{name: entry}``. The name is the tar entry name as written,
so hostile names (``../x``, ``/etc/x``) can be expressed, except for the two whiteout
kinds, whose key is the path they act on::

    layer = gzip_layer({
        "etc/": Dir(),
        "etc/motd": File(b"hello\\n", mode=0o644),
        "bin/sh": Symlink("busybox"),
        "etc/old.conf": Whiteout(),          # written as etc/.wh.old.conf
        "var/cache": OpaqueWhiteout(),       # written as var/cache/.wh..wh..opq
    })
    pushed = push_test_image(registry, "test/app", "v1", [base, layer])
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import posixpath
import sqlite3
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketch.images import ImageStore
from ketch.images.endpoints import Endpoint
from ketch.images.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from ketch.images.registry import RegistryClient, open_session, push_image
from ketch.linux.syscalls import MNT_DETACH, umount

MTIME = 1_700_000_000


@dataclass(frozen=True)
class File:
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    xattrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class HardLink:
    target: str


@dataclass(frozen=True)
class Device:
    kind: str  # "char" or "block"
    major: int
    minor: int
    mode: int = 0o666


@dataclass(frozen=True)
class Fifo:
    mode: int = 0o644


@dataclass(frozen=True)
class Whiteout:
    """Removes the key's path from the layers below."""


@dataclass(frozen=True)
class OpaqueWhiteout:
    """Hides what the layers below have in the key's directory."""


Entry = File | Dir | Symlink | HardLink | Device | Fifo | Whiteout | OpaqueWhiteout


@dataclass(frozen=True)
class PushedImage:
    manifest_digest: str
    config_digest: str
    diff_ids: list[str]


def layer_tar(entries: dict[str, Entry]) -> bytes:
    """Return an uncompressed layer tar with ``entries`` in the given order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, entry in entries.items():
            info, data = _tar_member(name, entry)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def gzip_layer(entries: dict[str, Entry]) -> bytes:
    return gzip.compress(layer_tar(entries), mtime=0)


def diff_id_of(layer: bytes) -> str:
    """Return the diff ID of a layer blob, compressed or not."""
    plain = gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer
    return "sha256:" + hashlib.sha256(plain).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_config(
    layers: list[bytes],
    *,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    diff_ids: list[str] | None = None,
    architecture: str = "amd64",
) -> bytes:
    """Return an image config for ``layers``; ``diff_ids`` overrides the true ones."""
    document = {
        "architecture": architecture,
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Env": env or ["PATH=/usr/bin:/bin"], "Cmd": cmd or ["sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids if diff_ids is not None else [diff_id_of(x) for x in layers],
        },
    }
    return json.dumps(document).encode()


def push_test_image(
    registry: str,
    repository: str,
    tag: str,
    layers: list[bytes],
    config: bytes | None = None,
    manifest_media_type: str = DOCKER_MANIFEST,
) -> PushedImage:
    """Push an image made of ``layers`` (bottom first) to ``registry`` ("127.0.0.1:PORT")."""
    config = config if config is not None else image_config(layers)

    async def push() -> str:
        async with open_session() as session:
            endpoint = Endpoint(f"http://{registry}", registry)
            return await push_image(
                session, endpoint, repository, tag, config, layers, manifest_media_type
            )

    manifest_digest = asyncio.run(push())
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    return PushedImage(manifest_digest, digest_of(config), diff_ids)


def push_index(
    registry: str,
    repository: str,
    tag: str,
    platforms: dict[str, PushedImage],
    oci: bool = True,
) -> str:
    """Push an index whose entries are already-pushed images keyed by "os/arch[/variant]";
    return the index digest."""
    manifest_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    index_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST

    async def push() -> str:
        async with open_session() as session:
            endpoint = Endpoint(f"http://{registry}", registry)
            client = RegistryClient(session, endpoint, repository, actions="pull,push")
            entries = []
            for platform, image in platforms.items():
                fetched = await client.get_manifest(image.manifest_digest, platform)
                os_name, architecture, *variant = platform.split("/")
                entry_platform = {"os": os_name, "architecture": architecture}
                if variant:
                    entry_platform["variant"] = variant[0]
                entries.append(
                    {
                        "mediaType": json.loads(fetched.data).get("mediaType", manifest_type),
                        "digest": fetched.digest,
                        "size": len(fetched.data),
                        "platform": entry_platform,
                    }
                )
            document = {"schemaVersion": 2, "mediaType": index_type, "manifests": entries}
            return await client.put_manifest(tag, json.dumps(document).encode(), index_type)

    return asyncio.run(push())


def _tar_member(name: str, entry: Entry) -> tuple[tarfile.TarInfo, bytes | None]:
    if isinstance(entry, Whiteout):
        directory, base = posixpath.split(name)
        return _plain(posixpath.join(directory, ".wh." + base), tarfile.REGTYPE), b""
    if isinstance(entry, OpaqueWhiteout):
        return _plain(posixpath.join(name, ".wh..wh..opq"), tarfile.REGTYPE), b""

    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    if isinstance(entry, File):
        info.type, info.size, info.mode = tarfile.REGTYPE, len(entry.data), entry.mode
        info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
        info.pax_headers = {f"SCHILY.xattr.{key}": value for key, value in entry.xattrs.items()}
        return info, entry.data
    if isinstance(entry, Dir):
        info.type, info.mode = tarfile.DIRTYPE, entry.mode
        info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
    elif isinstance(entry, Symlink):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
    elif isinstance(entry, HardLink):
        info.type, info.linkname, info.mode = tarfile.LNKTYPE, entry.target, 0o644
    elif isinstance(entry, Device):
        info.type = tarfile.CHRTYPE if entry.kind == "char" else tarfile.BLKTYPE
        info.devmajor, info.devminor, info.mode = entry.major, entry.minor, entry.mode
    elif isinstance(entry, Fifo):
        info.type, info.mode = tarfile.FIFOTYPE, entry.mode
    return info, None


def _plain(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mtime, info.mode = kind, MTIME, 0o644
    return info


def mounts_under(path: Path) -> list[str]:
    """Return the mount points at or below ``path``, from /proc/self/mountinfo."""
    prefix = str(path)
    with open("/proc/self/mountinfo") as mountinfo:
        targets = [line.split()[4] for line in mountinfo]
    return [t for t in targets if t == prefix or t.startswith(prefix + "/")]


@contextmanager
def image_store(root: Path, **options: Any) -> Iterator[ImageStore]:
    """Yield an ImageStore under ``root`` with its own database; afterwards release every
    container rootfs it mounted, also when the test failed."""
    root.mkdir(parents=True, exist_ok=True)
    # Opened as ketchd opens it: autocommit, so each store change is its own transaction.
    db = sqlite3.connect(root / "ketch.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    store = ImageStore(root / "images", db, **options)
    try:
        yield store
    finally:
        for container_dir in (root / "images" / "containers").iterdir():
            store.release_rootfs(container_dir.name)
        for target in sorted(mounts_under(root), key=len, reverse=True):
            umount(target, MNT_DETACH)
        db.close()
