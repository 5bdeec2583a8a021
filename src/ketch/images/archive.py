"""Image archives: ``docker save`` tarballs and OCI image layouts in and out, and
``import`` of a root filesystem tarball as a one-layer image.

What ``save`` writes is both an OCI image layout and a ``docker save`` archive, as docker
25 does, so that every loader finds its own index::

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 one OCI manifest per image and name, named by the
                               io.containerd.image.name and org.opencontainers.image.ref.name
                               annotations
    manifest.json              [{"Config": "blobs/sha256/<hex>", "RepoTags": [...],
                                 "Layers": ["blobs/sha256/<hex>", ...]}], read by
                               ``docker load`` and ``podman load``
    blobs/sha256/<hex>         configs, manifests and layers; layers as plain tar, so each
                               layer's digest is its diff ID, as docker's own archives have

``load`` reads that form, the legacy form older docker writes (``manifest.json`` naming
``<id>/layer.tar`` files, repeated layers as symlinks to the first) and a plain OCI layout
(``index.json`` only). Layers may be plain, gzip or zstd tars.

An archive is unpacked into a staging directory first, because its members come in any
order. Layout::

    <root>/archives/<random>/     a staging directory, removed when the load ends

Entry names are checked like layer entries (no ``..``, no absolute names). No symlink is
made on disk. The archive's symlinks are kept in a table and resolved inside the archive,
so nothing outside the staging directory is read or written.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import posixpath
import secrets
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ketch.errors import InvalidArgument, SystemFailure
from ketch.images.layers import split_entry_path
from ketch.images.manifest import (
    INDEX_MEDIA_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    build_manifest,
    host_platform,
    load_document,
    parse_manifest,
    select_manifest,
)

log = logging.getLogger(__name__)

_CHUNK_SIZE = 1024 * 1024
_MAX_SYMLINK_HOPS = 16
# Errors that come from the host's disk, not from the archive's content.
_HOST_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"


@dataclass
class ArchiveImage:
    """One image found in an archive: its config and layer files, bottom first."""

    config: bytes
    layers: list[Path]
    names: list[str] = field(default_factory=list)  # as the archive spells them


class ArchiveSource(Protocol):
    """A source of archive files: a staged archive or an OCI layout directory."""

    def path(self, name: str) -> Path: ...

    def exists(self, name: str) -> bool: ...


class StagedArchive:
    """An archive unpacked into ``directory``, with its symlinks kept in a table."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Each symlink or hard link, by name, with the archive path it stands for; None
        # for a symlink that points outside the archive.
        self.links: dict[str, str | None] = {}

    def extract(self, stream: BinaryIO) -> None:
        """Unpack the tar ``stream``: directories and regular files only, no symlinks."""
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as archive:
                for member in archive:
                    self._extract_member(archive, member)
        except OSError as error:
            if error.errno in _HOST_ERRNOS:
                raise SystemFailure(
                    f"cannot stage the archive in {self.directory}: {error}"
                ) from None
            raise InvalidArgument(f"the archive is not a valid tar file: {error}") from None
        except (tarfile.TarError, EOFError) as error:
            raise InvalidArgument(f"the archive is not a valid tar file: {error}") from None

    def _extract_member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        try:
            parts = split_entry_path(member.name)
        except ValueError as error:
            raise InvalidArgument(f"archive entry {member.name!r}: {error}") from None
        if not parts:
            return
        name = "/".join(parts)
        target = self.directory.joinpath(*parts)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.issym():
            self.links[name] = _symlink_target(name, member.linkname)
        elif member.islnk():
            self.links[name] = member.linkname  # hard links name a path from the root
        elif member.isreg():
            self.links.pop(name, None)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            # No symlink is ever made below the staging directory, so this open cannot
            # be redirected; O_NOFOLLOW keeps it that way if that ever changes.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, _CHUNK_SIZE)
        else:
            log.debug("archive: skipping entry %s of type %r", member.name, member.type)

    def path(self, name: str) -> Path:
        """Return the staged file the archive calls ``name``, following its symlinks."""
        resolved = self._resolve(name)
        path = self.directory / resolved
        if not path.is_file():
            raise InvalidArgument(f"the archive has no file {name!r}")
        return path

    def exists(self, name: str) -> bool:
        try:
            self.path(name)
        except InvalidArgument:
            return False
        return True

    def _resolve(self, name: str) -> str:
        current = name
        for _ in range(_MAX_SYMLINK_HOPS):
            try:
                current = "/".join(split_entry_path(current))
            except ValueError as error:
                raise InvalidArgument(f"archive path {name!r}: {error}") from None
            if current not in self.links:
                return current
            target = self.links[current]
            if target is None:
                raise InvalidArgument(f"archive symlink {current!r} points outside the archive")
            current = target
        raise InvalidArgument(f"archive path {name!r}: too many levels of symlinks")


def _symlink_target(name: str, link: str) -> str | None:
    """Return the archive path that the symlink ``name`` -> ``link`` stands for, or None
    when it is absolute or leads out of the archive."""
    if link.startswith("/"):
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
    if joined == ".." or joined.startswith("../"):
        return None
    return joined


class LayoutDirectory:
    """An OCI image layout directory on the host, read in place."""

    def __init__(self, directory: Path) -> None:
        if not (directory / "oci-layout").is_file():
            raise InvalidArgument(f"{directory} is not an OCI image layout: no oci-layout file")
        self.directory = directory

    def path(self, name: str) -> Path:
        try:
            parts = split_entry_path(name)
        except ValueError as error:
            raise InvalidArgument(f"OCI layout path {name!r}: {error}") from None
        path = self.directory.joinpath(*parts)
        if not path.is_file():
            raise InvalidArgument(f"the OCI layout {self.directory} has no file {name!r}")
        return path

    def exists(self, name: str) -> bool:
        try:
            self.path(name)
        except InvalidArgument:
            return False
        return True


def read_images(source: ArchiveSource) -> list[ArchiveImage]:
    """Return the images of an archive: from ``manifest.json`` when there is one, which
    both docker forms have, else from an OCI layout's ``index.json``."""
    if source.exists("manifest.json"):
        return _read_docker_manifest(source)
    if source.exists("index.json"):
        return _read_oci_index(source)
    raise InvalidArgument(
        "the archive has neither manifest.json (docker save) nor index.json (OCI layout)"
    )


def _read_docker_manifest(source: ArchiveSource) -> list[ArchiveImage]:
    document = _read_json(source, "manifest.json")
    if not isinstance(document, list):
        raise InvalidArgument("manifest.json in the archive is not a list")
    images = []
    for index, entry in enumerate(document):
        label = f"manifest.json entry {index}"
        if not isinstance(entry, dict):
            raise InvalidArgument(f"{label} is not an object")
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list):
            raise InvalidArgument(f"{label} has no Config string or Layers list")
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise InvalidArgument(f"{label}: RepoTags is not a list of names")
        layers = [source.path(str(name)) for name in layer_names]
        images.append(ArchiveImage(source.path(config_name).read_bytes(), layers, list(tags)))
    return images


def _read_oci_index(source: ArchiveSource) -> list[ArchiveImage]:
    index = _read_json(source, "index.json")
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise InvalidArgument("index.json has no manifests list")
    images = []
    for position, entry in enumerate(entries):
        label = f"index.json manifest {position}"
        descriptor, document = _load_manifest_entry(source, entry, label)
        manifest = parse_manifest(document, descriptor.media_type, label)
        layers = [_blob_path(source, layer.digest) for layer in manifest.layers]
        config = _blob_path(source, manifest.config.digest).read_bytes()
        annotations = entry.get("annotations") or {}
        name = annotations.get(IMAGE_NAME_ANNOTATION) or annotations.get(REF_NAME_ANNOTATION)
        # A bare ref.name is a tag only ("latest"), which names no repository.
        names = [name] if isinstance(name, str) and ("/" in name or ":" in name) else []
        images.append(ArchiveImage(config, layers, names))
    return images


def _load_manifest_entry(
    source: ArchiveSource, entry: Any, label: str
) -> tuple[Descriptor, dict[str, Any]]:
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{label} is not an object")
    media_type, digest = entry.get("mediaType"), entry.get("digest")
    if not isinstance(digest, str) or not isinstance(media_type, str):
        raise InvalidArgument(f"{label} has no mediaType or digest")
    document = load_document(_blob_path(source, digest).read_bytes(), label)
    if media_type in INDEX_MEDIA_TYPES:
        # A multi-platform image: this machine's platform is the one loaded.
        chosen = select_manifest(document, host_platform(), label)
        document = load_document(_blob_path(source, chosen.digest).read_bytes(), label)
        media_type, digest = chosen.media_type, chosen.digest
    return Descriptor(media_type, digest, 0), document


def _blob_path(source: ArchiveSource, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or len(hex_digest) != 64:
        raise InvalidArgument(f"unsupported digest {digest!r} in the archive")
    return source.path(f"blobs/sha256/{hex_digest}")


def _read_json(source: ArchiveSource, name: str) -> Any:
    try:
        return json.loads(source.path(name).read_bytes())
    except ValueError as error:
        raise InvalidArgument(f"{name} in the archive is not valid JSON: {error}") from None


def new_staging_directory(root: Path) -> Path:
    """Create ``<root>/archives/<random>``, for one archive being loaded."""
    directory = root / "archives" / secrets.token_hex(8)
    directory.mkdir(parents=True, mode=0o700)
    return directory


def remove_staging_leftovers(root: Path) -> None:
    """Remove staging directories a crash left behind."""
    staging = root / "archives"
    if staging.is_dir():
        for entry in staging.iterdir():
            log.info("removing archive staging directory %s left by an earlier run", entry)
            shutil.rmtree(entry, ignore_errors=True)


# Saving.


@dataclass(frozen=True)
class SavedImage:
    """One image to save: its config and plain layer tars (bottom first), and names."""

    config: bytes
    layers: list[tuple[str, Path]]  # (diff ID, path of the plain tar)
    names: list[str]  # full references, "docker.io/library/busybox:latest"
    repo_tags: list[str]  # the same names in docker's familiar form, "busybox:latest"


class ArchiveSink(Protocol):
    """A destination for ``write_layout``: a tar stream or a directory."""

    def add_bytes(self, name: str, data: bytes) -> None: ...

    def add_file(self, name: str, path: Path) -> None: ...


class TarSink:
    """Files written as a tar stream to ``out``, which need not be seekable."""

    def __init__(self, out: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]
        self._directories: set[str] = set()

    def close(self) -> None:
        self._tar.close()

    def add_bytes(self, name: str, data: bytes) -> None:
        self._add_parents(name)
        self._tar.addfile(self._member(name, len(data)), io.BytesIO(data))

    def add_file(self, name: str, path: Path) -> None:
        self._add_parents(name)
        with open(path, "rb") as content:
            self._tar.addfile(self._member(name, os.fstat(content.fileno()).st_size), content)

    def _add_parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory not in self._directories:
                self._directories.add(directory)
                member = self._member(directory, 0)
                member.type, member.mode = tarfile.DIRTYPE, 0o755
                self._tar.addfile(member)

    @staticmethod
    def _member(name: str, size: int) -> tarfile.TarInfo:
        member = tarfile.TarInfo(name)
        member.size, member.mode, member.mtime = size, 0o644, 0
        return member


class DirectorySink:
    """Files written below ``directory``, which must be empty or absent."""

    def __init__(self, directory: Path) -> None:
        if directory.exists() and any(directory.iterdir()):
            raise InvalidArgument(f"cannot write an OCI layout into {directory}: it is not empty")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    def add_bytes(self, name: str, data: bytes) -> None:
        target = self._target(name)
        target.write_bytes(data)

    def add_file(self, name: str, path: Path) -> None:
        shutil.copyfile(path, self._target(name))

    def _target(self, name: str) -> Path:
        target = self.directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def write_layout(images: Iterable[SavedImage], sink: ArchiveSink) -> None:
    """Write ``images`` to ``sink`` in the combined OCI layout and docker save form."""
    written: set[str] = set()
    index_entries: list[dict[str, Any]] = []
    docker_entries: list[dict[str, Any]] = []

    def add_blob(data: bytes | None, path: Path | None, digest: str) -> str:
        name = "blobs/sha256/" + digest.removeprefix("sha256:")
        if name not in written:
            written.add(name)
            if data is not None:
                sink.add_bytes(name, data)
            else:
                assert path is not None
                sink.add_file(name, path)
        return name

    for image in images:
        config_digest = _digest(image.config)
        config_name = add_blob(image.config, None, config_digest)
        layer_names = []
        layer_descriptors = []
        for diff_id, path in image.layers:
            layer_names.append(add_blob(None, path, diff_id))
            layer_descriptors.append(Descriptor(OCI_LAYER, diff_id, path.stat().st_size))
        config_descriptor = Descriptor(OCI_CONFIG, config_digest, len(image.config))
        manifest = build_manifest(config_descriptor, layer_descriptors, OCI_MANIFEST)
        manifest_digest = _digest(manifest)
        add_blob(manifest, None, manifest_digest)

        descriptor = {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest)}
        for name in image.names or [None]:
            entry = dict(descriptor)
            if name is not None:
                entry["annotations"] = {
                    IMAGE_NAME_ANNOTATION: name,
                    REF_NAME_ANNOTATION: name.rpartition(":")[2],
                }
            index_entries.append(entry)
        docker_entries.append(
            {"Config": config_name, "RepoTags": image.repo_tags, "Layers": layer_names}
        )

    sink.add_bytes("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries}
    sink.add_bytes("index.json", json.dumps(index).encode())
    sink.add_bytes("manifest.json", json.dumps(docker_entries).encode())


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
