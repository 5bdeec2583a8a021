"""Pushing an image: layers, then the config, then the manifest under its tag.

For each layer blob, up to three at a time, the pusher:

1. checks with HEAD whether the repository has it already, and then sends nothing;
2. else tries a cross-repository mount from each other repository on the same registry
   that an image in the store was pulled from or pushed to with this blob;
3. else uploads it: in one PUT when it is at most ``monolithic_max`` bytes, else in
   PATCH chunks of ``chunk_size`` bytes closed by an empty PUT.

The manifest goes last, so the tag never names a manifest whose blobs are missing. A
pulled image is pushed with the manifest it was pulled with, so its digest stays the same;
otherwise ketch writes a Docker v2 schema 2 manifest (OCI when a layer has an OCI-only
media type). The pushed ``name@digest`` is recorded, as docker does.

Progress goes to the caller as Engine API JSON messages, as docker push writes them
(``<layer>`` is the first 12 hex digits of the layer's diff ID)::

    {"status": "The push refers to repository [127.0.0.1:5000/app]"}
    {"status": "Preparing", "progressDetail": {}, "id": "<layer>"}
    {"status": "Waiting", "progressDetail": {}, "id": "<layer>"}     while others upload
    {"status": "Pushing", "progressDetail": {"current": n, "total": m}, "id": "<layer>"}
    {"status": "Pushed", "progressDetail": {}, "id": "<layer>"}
        or "Layer already exists", or "Mounted from <repository>"
    {"status": "v1: digest: sha256:... size: 527"}
    {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": "sha256:...", "Size": 527}}
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ketch.errors import Forbidden, InvalidArgument, NotFound, Unavailable
from ketch.images.auth import Credentials, CredentialStore
from ketch.images.content import ContentStore
from ketch.images.endpoints import endpoints_for
from ketch.images.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    MANIFEST_MEDIA_TYPES,
    MAX_DOCUMENT_SIZE,
    OCI_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    build_manifest,
    detect_media_type,
    load_document,
    parse_manifest,
)
from ketch.images.metadata import ImageMetadata, LayerRecord
from ketch.images.reference import Reference, parse_normalized
from ketch.images.registry import RegistryClient, credentials_for, open_session

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]

MAX_CONCURRENT_UPLOADS = 3
# Blobs up to this size go in one PUT. Larger ones go in PATCH chunks, so that no single
# request carries a whole large layer.
MONOLITHIC_MAX = 64 * 1024 * 1024
CHUNK_SIZE = 32 * 1024 * 1024
# The size of each read from a blob file while it streams to the registry.
READ_SIZE = 1024 * 1024
PROGRESS_INTERVAL_SECONDS = 0.1
_DOCKER_MEDIA_TYPES = frozenset({DOCKER_LAYER_GZIP})


@dataclass(frozen=True)
class PushOptions:
    monolithic_max: int = MONOLITHIC_MAX
    chunk_size: int = CHUNK_SIZE


class Pusher:
    """One push of one image to ``reference`` (which has a tag); ``run`` returns the
    manifest digest."""

    def __init__(
        self,
        *,
        content: ContentStore,
        metadata: ImageMetadata,
        credentials: CredentialStore | None,
        insecure_registries: Sequence[str],
        image_id: str,
        reference: Reference,
        progress: ProgressCallback | None,
        options: PushOptions | None = None,
        auth: Credentials | None = None,
    ) -> None:
        if reference.tag is None or reference.digest is not None:
            raise InvalidArgument(f"cannot push {reference}: expected a reference with a tag")
        self.content = content
        self.metadata = metadata
        self.credentials = credentials
        self.insecure_registries = insecure_registries
        self.image_id = image_id
        self.reference = reference
        self.progress = progress
        self.options = options or PushOptions()
        self.auth = auth
        self._last_progress: dict[str, float] = {}
        self._progress_failed = False

    async def run(self) -> str:
        reference = self.reference
        layers = self.metadata.layers(self.image_id)
        self._check_blobs_present(layers)
        self._emit({"status": f"The push refers to repository [{reference.name}]"})
        # Docker pushes to the first endpoint only: mirrors are for pulls.
        endpoint = endpoints_for(reference.domain, [], self.insecure_registries)[0]

        async with open_session() as session:
            client = RegistryClient(
                session,
                endpoint,
                reference.path,
                display_name=reference.familiar_name,
                actions="pull,push",
                credentials=self.auth or credentials_for(self.credentials, endpoint),
            )
            for layer in layers:
                self._emit_layer(layer, "Preparing")
            await self._push_layers(client, layers)
            await self._push_blob(client, self.image_id)
            manifest, media_type = self._manifest(layers)
            digest = await client.put_manifest(reference.tag or "", manifest, media_type)

        self._record(digest)
        tag = reference.tag
        self._emit({"status": f"{tag}: digest: {digest} size: {len(manifest)}"})
        aux = {"Tag": tag, "Digest": digest, "Size": len(manifest)}
        self._emit({"progressDetail": {}, "aux": aux})
        log.info("pushed image %s as %s@%s", self.image_id, reference.familiar(), digest)
        return digest

    def _check_blobs_present(self, layers: list[LayerRecord]) -> None:
        for layer in layers:
            if not self.content.exists(layer.blob_digest):
                # Limitation: a layer whose compressed blob is gone (an image loaded or
                # built without one) is not recompressed from its snapshot here.
                raise NotFound(
                    f"cannot push image {self.image_id}: blob {layer.blob_digest} of layer "
                    f"{layer.diff_id} is not in the content store"
                )

    async def _push_layers(self, client: RegistryClient, layers: list[LayerRecord]) -> None:
        semaphore = asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)

        async def push_one(layer: LayerRecord) -> None:
            if semaphore.locked():
                self._emit_layer(layer, "Waiting")
            async with semaphore:
                await self._push_layer(client, layer)

        tasks = [asyncio.create_task(push_one(layer)) for layer in layers]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _push_layer(self, client: RegistryClient, layer: LayerRecord) -> None:
        digest = layer.blob_digest
        if await client.blob_exists(digest):
            self._emit_layer(layer, "Layer already exists")
            return
        location = None
        for source in self._mount_sources(digest):
            try:
                location = await client.mount_blob(digest, source)
            except (Forbidden, NotFound, Unavailable) as error:
                log.debug("mount of %s from %s failed: %s", digest, source, error)
                continue
            if location is None:
                self._emit_layer(layer, f"Mounted from {source}")
                return
            break
        await self._upload(client, layer, digest, location)
        self._emit_layer(layer, "Pushed")

    async def _push_blob(self, client: RegistryClient, digest: str) -> None:
        if not await client.blob_exists(digest):
            await self._upload(client, None, digest, None)

    async def _upload(
        self,
        client: RegistryClient,
        layer: LayerRecord | None,
        digest: str,
        location: str | None,
    ) -> None:
        """Upload a blob from the content store, starting an upload unless ``location``
        already names one (a mount for which the registry started a plain upload)."""
        size = self.content.size(digest)
        location = location or await client.start_upload(digest)
        if size <= self.options.monolithic_max:
            await client.finish_upload(
                location, digest, lambda: self._read_blob(digest, size, layer), size
            )
            return

        offset = 0
        with open(self.content.path(digest), "rb") as blob:
            while offset < size:
                chunk = await asyncio.to_thread(blob.read, self.options.chunk_size)
                location = await client.upload_chunk(location, chunk, offset)
                offset += len(chunk)
                if layer is not None:
                    self._emit_bytes(layer, offset, size)
        await client.finish_upload(location, digest, None, 0)

    async def _read_blob(
        self, digest: str, size: int, layer: LayerRecord | None
    ) -> AsyncIterator[bytes]:
        sent = 0
        fd = os.open(self.content.path(digest), os.O_RDONLY | os.O_CLOEXEC)
        try:
            while sent < size:
                chunk = os.pread(fd, min(READ_SIZE, size - sent), sent)
                if not chunk:
                    raise Unavailable(f"blob {digest} ended at byte {sent} of {size}")
                sent += len(chunk)
                yield chunk
                if layer is not None:
                    self._emit_bytes(layer, sent, size)
        finally:
            os.close(fd)

    def _mount_sources(self, digest: str) -> list[str]:
        """Return other repositories on the target registry known to have the blob."""
        sources: list[str] = []
        for image_id in self.metadata.image_ids_with_blob(digest):
            for name, _ in self.metadata.names(image_id):
                other = parse_normalized(name)
                if other.domain == self.reference.domain and other.path != self.reference.path:
                    sources.append(other.path)
        return list(dict.fromkeys(sources))

    def _manifest(self, layers: list[LayerRecord]) -> tuple[bytes, str]:
        """Return the manifest this image was pulled with, else a new one, and its type."""
        layer_digests = {layer.blob_digest for layer in layers}
        for digest in self.metadata.blobs(self.image_id):
            if digest == self.image_id or digest in layer_digests:
                continue
            found = self._stored_manifest(digest, layers)
            if found is not None:
                return found

        config_size = self.content.size(self.image_id)
        docker = all(layer.media_type in _DOCKER_MEDIA_TYPES for layer in layers)
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        config = Descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, self.image_id, config_size)
        descriptors = [Descriptor(x.media_type, x.blob_digest, x.blob_size) for x in layers]
        return build_manifest(config, descriptors, media_type), media_type

    def _stored_manifest(self, digest: str, layers: list[LayerRecord]) -> tuple[bytes, str] | None:
        try:
            if self.content.size(digest) > MAX_DOCUMENT_SIZE:
                return None
            data = self.content.read(digest)
            document = load_document(data, f"blob {digest}")
            media_type = detect_media_type(document, "")
            if media_type not in MANIFEST_MEDIA_TYPES:
                return None
            manifest = parse_manifest(document, media_type, f"manifest {digest}")
        except (InvalidArgument, NotFound, json.JSONDecodeError):
            return None
        layer_digests = [layer.digest for layer in manifest.layers]
        if manifest.config.digest != self.image_id:
            return None
        if layer_digests != [layer.blob_digest for layer in layers]:
            return None
        return data, media_type

    def _record(self, digest: str) -> None:
        record = self.metadata.image(self.image_id)
        if record is None:
            # Removed while it was being pushed: the registry has it, the store does not.
            return
        self.metadata.add_image(record, [], set(), {f"{self.reference.name}@{digest}": "digest"})

    def _emit(self, message: dict[str, Any]) -> None:
        if self.progress is None or self._progress_failed:
            return
        try:
            self.progress(message)
        except Exception:
            # A client that went away must not fail the push; later messages are dropped.
            self._progress_failed = True
            log.exception("progress callback failed for push of %s", self.reference.familiar())

    def _emit_layer(self, layer: LayerRecord, status: str) -> None:
        self._emit({"status": status, "progressDetail": {}, "id": _short_id(layer.diff_id)})

    def _emit_bytes(self, layer: LayerRecord, current: int, total: int) -> None:
        now = time.monotonic()
        last = self._last_progress.get(layer.diff_id, 0.0)
        if current < total and now - last < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_progress[layer.diff_id] = now
        detail = {"current": current, "total": total}
        self._emit({"status": "Pushing", "progressDetail": detail, "id": _short_id(layer.diff_id)})


def _short_id(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
