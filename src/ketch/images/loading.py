"""Images that come from files rather than registries: archives loaded, rootfs tarballs
imported, and images saved to archives or OCI layout directories.

The archive formats are in ``ketch.images.archive``. This module records what an archive
contains the way a pull does. Layer blobs and configs go to the content store, each layer
to a snapshot by chain ID, and the image with its names to the metadata tables.
Database calls stay on the calling (event loop) thread, and hashing, copying and unpacking
run in worker threads.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ketch.errors import InvalidArgument, NotFound
from ketch.images.archive import (
    ArchiveImage,
    DirectorySink,
    LayoutDirectory,
    SavedImage,
    StagedArchive,
    TarSink,
    new_staging_directory,
    read_images,
    remove_staging_leftovers,
    write_layout,
)
from ketch.images.layers import unpack_layer
from ketch.images.manifest import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    build_manifest,
    config_diff_ids,
    host_platform,
    load_document,
)
from ketch.images.metadata import ImageRecord, LayerRecord
from ketch.images.reference import parse_normalized, parse_reference
from ketch.images.snapshots import chain_ids

if TYPE_CHECKING:
    from ketch.images.store import ImageStore

log = logging.getLogger(__name__)

_CHUNK_SIZE = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class LoadedImage:
    """An image recorded from an archive, with the names the archive gave it."""

    id: str
    repo_tags: list[str]  # familiar form, "busybox:latest"


class ImageFiles:
    """Loading, importing and saving for one ImageStore."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        remove_staging_leftovers(store.root)

    async def load(self, source: BinaryIO | Path) -> list[LoadedImage]:
        """Load every image of a ``docker save`` or OCI archive stream, or of an OCI
        layout directory when ``source`` is a Path."""
        if isinstance(source, Path):
            return await self._record_all(read_images(LayoutDirectory(source)))
        with self._staging() as directory:
            staged = StagedArchive(directory)
            await asyncio.to_thread(staged.extract, source)
            images = await asyncio.to_thread(read_images, staged)
            return await self._record_all(images)

    async def import_rootfs(
        self,
        stream: BinaryIO,
        reference: str | None,
        *,
        container_config: dict[str, Any] | None = None,
        comment: str = "",
    ) -> LoadedImage:
        """Record the rootfs tarball ``stream`` (plain, gzip or zstd) as a one-layer image
        named ``reference`` (none when None), as ``docker import`` does.

        ``container_config`` is the config's "config" object (Cmd, Env, ...), empty when
        None. ``comment`` is the history entry's comment, a default one when empty.
        """
        name = str(parse_reference(reference)) if reference else None
        if reference and parse_reference(reference).digest:
            raise InvalidArgument(
                f"cannot import as {reference!r}: a digest names content that a registry "
                "stored; name the image with a tag"
            )
        with self._staging() as directory:
            blob = directory / "rootfs.tar"
            await asyncio.to_thread(_copy_stream, stream, blob)
            diff_id = await asyncio.to_thread(_plain_digest, blob)
            created = _created_now()
            platform = host_platform()
            config: dict[str, Any] = {
                "architecture": platform.architecture,
                "os": platform.os,
                "created": created,
                "config": container_config or {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [
                    {"created": created, "comment": comment or "Imported from a rootfs tarball"}
                ],
            }
            if platform.variant:
                config["variant"] = platform.variant
            if comment:
                # docker import keeps the message in the config itself too.
                config["comment"] = comment
            document = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
            image = ArchiveImage(document, [blob], [name] if name else [])
            return (await self._record_all([image]))[0]

    async def save(self, names: list[str], out: BinaryIO | Path) -> None:
        """Write the images ``names`` name to ``out``: a tar stream in docker save form
        (which is an OCI layout too), or an OCI layout directory when ``out`` is a Path."""
        if not names:
            raise InvalidArgument("no image to save: name at least one image")
        requested = self._saved_names(names)
        with self._staging() as directory:
            images = []
            for image_id, full_names in requested.items():
                images.append(await self._saved_image(image_id, full_names, directory))
            if isinstance(out, Path):
                await asyncio.to_thread(write_layout, images, DirectorySink(out))
                return

            def write_tar() -> None:
                sink = TarSink(out)
                write_layout(images, sink)
                sink.close()

            await asyncio.to_thread(write_tar)

    # Loading.

    async def _record_all(self, images: list[ArchiveImage]) -> list[LoadedImage]:
        loaded = []
        for image in images:
            loaded.append(await self._record(image))
        return loaded

    async def _record(self, image: ArchiveImage) -> LoadedImage:
        config = load_document(image.config, "image config in the archive")
        diff_ids = config_diff_ids(config, "image config in the archive")
        if len(diff_ids) != len(image.layers):
            raise InvalidArgument(
                f"the archive lists {len(image.layers)} layers for an image whose config "
                f"has {len(diff_ids)} diff IDs"
            )
        names = self._tag_names(image.names)
        chains = chain_ids(diff_ids)
        store = self.store
        leased: list[str] = []

        def hold(name: str) -> None:
            store.leases.hold(name)
            leased.append(name)

        new_blobs: list[str] = []
        new_chains: list[str] = []
        try:
            descriptors = []
            for index, path in enumerate(image.layers):
                descriptor = await asyncio.to_thread(self._store_layer_blob, path, new_blobs)
                hold(descriptor.digest)
                hold(chains[index])
                descriptors.append(descriptor)
                if store.snapshots.stat(chains[index]) is None:
                    parent = chains[index - 1] if index else None
                    await self._unpack(descriptor, diff_ids[index], chains[index], parent)
                    new_chains.append(chains[index])
            return self._add_image(image.config, config, descriptors, diff_ids, chains, names)
        except BaseException:
            # What this load added and no image records goes again, as after a failed pull.
            store.leases.release(leased)
            leased.clear()
            store._collect_garbage(new_blobs, new_chains)
            raise
        finally:
            store.leases.release(leased)

    def _store_layer_blob(self, path: Path, new_blobs: list[str]) -> Descriptor:
        digest, size = _file_digest(path)
        content = self.store.content
        if not content.exists(digest):
            with content.writer(digest, size) as writer, open(path, "rb") as source:
                while chunk := source.read(_CHUNK_SIZE):
                    writer.write(chunk)
                writer.commit()
            new_blobs.append(digest)
        with open(path, "rb") as source:
            magic = source.read(4)
        if magic.startswith(_GZIP_MAGIC):
            media_type = OCI_LAYER_GZIP
        elif magic == _ZSTD_MAGIC:
            media_type = OCI_LAYER_ZSTD
        else:
            media_type = OCI_LAYER
        return Descriptor(media_type, digest, size)

    async def _unpack(
        self, layer: Descriptor, diff_id: str, chain_id: str, parent: str | None
    ) -> None:
        snapshots = self.store.snapshots
        key = f"load-{secrets.token_hex(4)}-{chain_id}"
        path = snapshots.prepare(key, parent)
        try:
            unpacked = await asyncio.to_thread(
                unpack_layer,
                self.store.content.path(layer.digest),
                path,
                layer=layer.digest,
                expected_diff_id=diff_id,
                whiteouts=snapshots.whiteout_form,
                limits=self.store.unpack_limits,
            )
        except BaseException:
            snapshots.abort(key)
            raise
        snapshots.commit(key, chain_id, diff_id, unpacked.size)

    def _add_image(
        self,
        raw_config: bytes,
        config: dict[str, Any],
        layers: list[Descriptor],
        diff_ids: list[str],
        chains: list[str],
        names: dict[str, str],
    ) -> LoadedImage:
        store = self.store
        config_digest = store.content.put(raw_config)
        config_descriptor = Descriptor(OCI_CONFIG, config_digest, len(raw_config))
        manifest_digest = store.content.put(build_manifest(config_descriptor, layers, OCI_MANIFEST))

        records = [
            LayerRecord(layer.digest, layer.media_type, layer.size, diff_ids[index], chains[index])
            for index, layer in enumerate(layers)
        ]
        size = 0
        for chain_id in chains:
            snapshot = store.snapshots.stat(chain_id)
            size += snapshot.size if snapshot else 0
        record = ImageRecord(
            id=config_digest,
            created=str(config.get("created") or "0001-01-01T00:00:00Z"),
            size=size,
            architecture=str(config.get("architecture") or ""),
            os=str(config.get("os") or ""),
            stored_at=datetime.now(UTC).isoformat(),
        )
        blobs = {config_digest, manifest_digest, *(layer.digest for layer in layers)}
        store.metadata.add_image(record, records, blobs, names)
        tags = [parse_normalized(name).familiar() for name in names]
        log.info("loaded image %s (%s)", config_digest, ", ".join(tags) or "no name")
        return LoadedImage(config_digest, tags)

    @staticmethod
    def _tag_names(names: list[str]) -> dict[str, str]:
        result = {}
        for name in names:
            reference = parse_normalized(name)
            if reference.digest:
                continue  # an archive cannot prove a registry digest, so none is recorded
            result[str(parse_reference(name))] = "tag"
        return result

    # Saving.

    def _saved_names(self, names: list[str]) -> dict[str, list[str]]:
        """Map each image to save to the full names it is saved under, in request order."""
        requested: dict[str, list[str]] = {}
        for text in names:
            image_id, full_name = self.store._lookup(text)
            listed = requested.setdefault(image_id, [])
            reference = parse_normalized(full_name) if full_name else None
            if full_name and reference and reference.tag and full_name not in listed:
                listed.append(full_name)
        return requested

    async def _saved_image(self, image_id: str, names: list[str], directory: Path) -> SavedImage:
        store = self.store
        layers = []
        for layer in store.metadata.layers(image_id):
            if not store.content.exists(layer.blob_digest):
                raise NotFound(
                    f"cannot save image {image_id}: its layer blob {layer.blob_digest} is not "
                    "in the content store; pull the image again"
                )
            blob = store.content.path(layer.blob_digest)
            if layer.blob_digest != layer.diff_id:
                plain = directory / layer.diff_id.removeprefix("sha256:")
                if not plain.exists():
                    await asyncio.to_thread(_decompress_to, blob, plain, layer.diff_id)
                blob = plain
            layers.append((layer.diff_id, blob))
        config = store.content.read(image_id)
        tags = [parse_normalized(name).familiar() for name in names]
        return SavedImage(config, layers, names, tags)

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        directory = new_staging_directory(self.store.root)
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def _copy_stream(stream: BinaryIO, path: Path) -> None:
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out, _CHUNK_SIZE)


def _file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


@contextmanager
def _open_plain(path: Path) -> Iterator[BinaryIO]:
    """Open a layer file and yield a stream of its plain tar."""
    with open(path, "rb") as source:
        magic = source.read(4)
        source.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            with gzip.GzipFile(fileobj=source, mode="rb") as plain:
                yield plain  # type: ignore[misc]
        elif magic == _ZSTD_MAGIC:
            import zstandard

            decompressor = zstandard.ZstdDecompressor()
            with decompressor.stream_reader(source, read_across_frames=True) as reader:
                yield reader  # type: ignore[misc]
        else:
            yield source


def _plain_digest(path: Path) -> str:
    """Return the diff ID of a layer file, plain or compressed."""
    digest = hashlib.sha256()
    with _open_plain(path) as plain:
        while chunk := plain.read(_CHUNK_SIZE):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _decompress_to(blob: Path, destination: Path, diff_id: str) -> None:
    digest = hashlib.sha256()
    with _open_plain(blob) as plain, open(destination, "wb") as out:
        while chunk := plain.read(_CHUNK_SIZE):
            digest.update(chunk)
            out.write(chunk)
    if "sha256:" + digest.hexdigest() != diff_id:
        destination.unlink()
        raise InvalidArgument(
            f"layer blob {blob.name} does not decompress to its diff ID {diff_id}; "
            "pull the image again"
        )


def _created_now() -> str:
    """Return the time now in RFC 3339 with nanoseconds, as docker stamps an import.

    The time is part of the config and so of the image ID, which makes two imports of the
    same tarball two images.
    """
    now_ns = time.time_ns()
    seconds = datetime.fromtimestamp(now_ns // 1_000_000_000, UTC)
    return f"{seconds:%Y-%m-%dT%H:%M:%S}.{now_ns % 1_000_000_000:09d}Z"
