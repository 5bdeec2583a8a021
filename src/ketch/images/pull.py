"""Pulling an image: resolve the reference, fetch index, manifest, config and layers, unpack
each layer into its snapshot, then record the image in one transaction.

Layers download up to three at a time, starting while the config is fetched. With the
overlay snapshotter each layer unpacks while it downloads (``ketch.images.feed``),
alongside the others, and one syncfs before the snapshots are committed bottom first
replaces one per layer. A snapshot is committed only after its blob's digest is verified. The
copying snapshotter needs each parent's files, so there layers unpack bottom first, each
from its stored blob. A download that breaks off resumes with HTTP Range from the bytes
kept in the content store's ``ingest/``, within the same pull and in a later pull of the
same blob. A layer whose chain ID already has a snapshot is neither downloaded nor
unpacked. Until the image is recorded nothing names it, and a pull that fails removes the
blobs and snapshots it made unless another image or another pull in progress uses them. It
keeps its partial downloads for the next pull, unless it failed because the image's
content was rejected.

Progress goes to the caller as Engine API JSON messages, in this order (``<layer>`` is the
first 12 hex digits of the layer's blob digest)::

    {"status": "Pulling from library/busybox", "id": "latest"}
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "<layer>"}    or "Already exists"
    {"status": "Waiting", "progressDetail": {}, "id": "<layer>"}    while three others download
    {"status": "Downloading", "progressDetail": {"current": n, "total": m}, "id": "<layer>"}
    {"status": "Verifying Checksum", "progressDetail": {}, "id": "<layer>"}
    {"status": "Download complete", "progressDetail": {}, "id": "<layer>"}
    {"status": "Extracting", "progressDetail": {"current": n, "total": m}, "id": "<layer>"}
    {"status": "Pull complete", "progressDetail": {}, "id": "<layer>"}
    {"status": "Digest: sha256:..."}
    {"status": "Status: Downloaded newer image for busybox:latest"}   or "Image is up to date"
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from ketch.errors import InvalidArgument
from ketch.images.auth import Credentials, CredentialStore
from ketch.images.content import BlobWriter, ContentStore
from ketch.images.feed import FeedBroken, LayerFeed
from ketch.images.layer_download import download_layer
from ketch.images.layers import DEFAULT_LIMITS, UnpackLimits
from ketch.images.leases import Leases
from ketch.images.manifest import (
    INDEX_MEDIA_TYPES,
    MAX_DOCUMENT_SIZE,
    Descriptor,
    Manifest,
    config_diff_ids,
    detect_media_type,
    host_platform,
    load_document,
    parse_manifest,
    select_manifest,
)
from ketch.images.metadata import ImageMetadata, ImageRecord, LayerRecord
from ketch.images.pull_progress import ProgressCallback, PullProgress
from ketch.images.pull_source import find_manifest
from ketch.images.reference import Reference
from ketch.images.registry import (
    FetchedManifest,
    RegistryClient,
    open_session,
)
from ketch.images.snapshot_unpack import unpack_into_snapshot
from ketch.images.snapshots import Snapshotter, chain_ids

log = logging.getLogger(__name__)

MAX_CONCURRENT_DOWNLOADS = 3
# Layers unpacked at once by the overlay snapshotter. Decompression, hashing and writing
# release the GIL on large buffers, so each extra thread can use another core.
MAX_CONCURRENT_UNPACKS = max(2, os.cpu_count() or 1)
# Bytes a layer's download may run ahead of its unpack before the unpack gives up and
# starts again from the stored blob, so a slow disk does not hold the blob in memory.
MAX_STREAM_BUFFER = 64 * 1024 * 1024


class Puller:
    """One pull of one reference; ``run`` returns the image ID once it is recorded."""

    def __init__(
        self,
        *,
        content: ContentStore,
        snapshots: Snapshotter,
        metadata: ImageMetadata,
        leases: Leases,
        mirrors: Sequence[str],
        insecure_registries: Sequence[str],
        collect_garbage: Callable[[list[str], list[str]], None],
        reference: Reference,
        progress: ProgressCallback | None,
        credentials: CredentialStore | None = None,
        auth: Credentials | None = None,
        unpack_limits: UnpackLimits = DEFAULT_LIMITS,
    ) -> None:
        self.unpack_limits = unpack_limits
        self.content = content
        self.snapshots = snapshots
        self.metadata = metadata
        self.leases = leases
        self.mirrors = mirrors
        self.insecure_registries = insecure_registries
        self.collect_garbage = collect_garbage
        self.reference = reference
        self._progress = PullProgress(progress, reference.familiar())
        self.credentials = credentials
        self.auth = auth
        self._leased_names: list[str] = []
        self._new_blobs: list[str] = []
        self._new_chains: list[str] = []
        # Unpacks that read a layer while it downloads, by layer index. They wait for
        # the layers' diff IDs and chain IDs, which come with the config.
        self._streams: dict[int, asyncio.Task[tuple[str, int] | None]] = {}
        self._layer_ids: asyncio.Future[tuple[list[str], list[str]]] | None = None
        # Twice the downloads: an unpack goes on after its download has freed its slot,
        # and the unpack of the download that takes the slot must not wait for a thread.
        # NOTE: when the unpacks fall further behind than that, a download still waits for
        # a thread, and past MAX_STREAM_BUFFER bytes its layer unpacks from the stored blob.
        self._stream_threads = ThreadPoolExecutor(
            2 * MAX_CONCURRENT_DOWNLOADS, thread_name_prefix="ketch-unpack"
        )

    async def run(self) -> str:
        try:
            image_id = await self._pull()
        except BaseException as error:
            self._discard(drop_partials=isinstance(error, InvalidArgument))
            raise
        finally:
            self.leases.release(self._leased_names)
            self._stream_threads.shutdown(wait=False)
        return image_id

    async def _pull(self) -> str:
        async with open_session() as session:
            client, fetched = await find_manifest(
                session,
                self.reference,
                self.mirrors,
                self.insecure_registries,
                self.auth,
                self.credentials,
            )
            # As dockerd does, only once the manifest is found: a missing image then gets an
            # error reply instead of an error inside a started progress stream.
            reference = self.reference
            self._progress.status(
                f"Pulling from {reference.path}", reference.digest or reference.tag
            )
            manifest, top_digest, document_blobs = await self._load_manifest(client, fetched)
            semaphore = asyncio.Semaphore(MAX_CONCURRENT_DOWNLOADS)
            self._layer_ids = asyncio.get_running_loop().create_future()
            downloads = self._prefetch_layers(client, manifest.layers, semaphore)
            try:
                config = await self._load_config(client, manifest.config)
                diff_ids = config_diff_ids(config, f"image config {manifest.config.digest}")
                if len(diff_ids) != len(manifest.layers):
                    raise InvalidArgument(
                        f"image {self.reference.familiar()} is inconsistent: its manifest "
                        f"lists {len(manifest.layers)} layers but its config lists "
                        f"{len(diff_ids)} diff IDs"
                    )
                chains = chain_ids(diff_ids)
                self._layer_ids.set_result((diff_ids, chains))
                await self._fetch_layers(
                    client, manifest.layers, diff_ids, chains, downloads, semaphore
                )
            finally:
                for task in downloads.values():
                    task.cancel()
                await asyncio.gather(*downloads.values(), return_exceptions=True)
                await self._stop_streams()

        image_id = manifest.config.digest
        tag_name = None
        if self.reference.tag and not self.reference.digest:
            tag_name = f"{self.reference.name}:{self.reference.tag}"
        previous = self.metadata.image_id_for_name(tag_name) if tag_name else None
        up_to_date = previous == image_id or (
            tag_name is None and self.metadata.image(image_id) is not None
        )
        self._record(image_id, config, manifest, diff_ids, chains, top_digest, document_blobs)

        self._progress.status(f"Digest: {top_digest}")
        if up_to_date:
            self._progress.status(f"Status: Image is up to date for {self.reference.familiar()}")
        else:
            self._progress.status(f"Status: Downloaded newer image for {self.reference.familiar()}")
        return image_id

    async def _load_manifest(
        self, client: RegistryClient, fetched: FetchedManifest
    ) -> tuple[Manifest, str, list[str]]:
        """Return the platform's manifest, the top-level digest and the documents' digests."""
        label = f"manifest {fetched.digest} for {self.reference.familiar()}"
        document = load_document(fetched.data, label)
        media_type = detect_media_type(document, fetched.content_type)
        self._store_blob(fetched.data, fetched.digest)
        blobs = [fetched.digest]
        if media_type not in INDEX_MEDIA_TYPES:
            return parse_manifest(document, media_type, label), fetched.digest, blobs

        chosen = select_manifest(document, host_platform(), label)
        platform_manifest = await client.get_manifest(chosen.digest, self.reference.familiar())
        label = f"manifest {chosen.digest} for {self.reference.familiar()}"
        document = load_document(platform_manifest.data, label)
        media_type = detect_media_type(document, platform_manifest.content_type)
        manifest = parse_manifest(document, media_type, label)
        self._store_blob(platform_manifest.data, platform_manifest.digest)
        blobs.append(platform_manifest.digest)
        return manifest, fetched.digest, blobs

    async def _load_config(self, client: RegistryClient, descriptor: Descriptor) -> dict[str, Any]:
        label = f"image config {descriptor.digest}"
        self._hold(descriptor.digest)
        if not self.content.exists(descriptor.digest):
            if descriptor.size > MAX_DOCUMENT_SIZE:
                raise InvalidArgument(f"{label} is {descriptor.size} bytes, too large")
            chunks: list[bytes] = []
            await client.download_blob(descriptor, chunks.append)
            self._store_blob(b"".join(chunks), descriptor.digest)
        return load_document(self.content.read(descriptor.digest), label)

    def _prefetch_layers(
        self, client: RegistryClient, layers: list[Descriptor], semaphore: asyncio.Semaphore
    ) -> dict[int, asyncio.Task[None]]:
        """Start downloading the layers that are surely new while the config is fetched.

        The config's diff IDs decide which snapshots exist already, so before it arrives
        only layers whose blob no image in the store has are started.
        """
        downloads: dict[int, asyncio.Task[None]] = {}
        for index, layer in enumerate(layers):
            if self.content.exists(layer.digest) or self.metadata.layer_blob_known(layer.digest):
                continue
            self._progress.layer(layer, "Pulling fs layer")
            downloads[index] = asyncio.create_task(self._download(client, layer, semaphore, index))
        return downloads

    async def _fetch_layers(
        self,
        client: RegistryClient,
        layers: list[Descriptor],
        diff_ids: list[str],
        chains: list[str],
        downloads: dict[int, asyncio.Task[None]],
        semaphore: asyncio.Semaphore,
    ) -> None:
        """Download what is missing and unpack each layer, bottom first, as it arrives.

        ``downloads`` are the tasks started by ``_prefetch_layers``; the caller cancels
        what is left of them.
        """
        for index, layer in enumerate(layers):
            self._hold(chains[index])
            if index in downloads:
                continue
            if self.snapshots.stat(chains[index]) is not None:
                self._progress.layer(layer, "Already exists")
                continue
            self._progress.layer(layer, "Pulling fs layer")
            downloads[index] = asyncio.create_task(self._download(client, layer, semaphore, index))

        if not self.snapshots.needs_parent_files:
            await self._extract_in_parallel(layers, diff_ids, chains, downloads)
            return
        for index, layer in enumerate(layers):
            if index not in downloads:
                continue
            prepared = await self._extract_after_download(
                index, layers, diff_ids, chains, downloads[index], parent_pending=False
            )
            if prepared is not None:
                key, size = prepared
                self._commit_snapshot(key, layer, diff_ids[index], chains[index], size)

    async def _extract_in_parallel(
        self,
        layers: list[Descriptor],
        diff_ids: list[str],
        chains: list[str],
        downloads: dict[int, asyncio.Task[None]],
    ) -> None:
        """Unpack each layer as soon as it is downloaded, alongside the others, then sync
        once and commit the snapshots bottom first.

        Only for snapshotters whose snapshots hold one layer each, so that no unpack reads
        the files of the layer below. The one sync comes before the first commit, so a
        committed snapshot is still always on disk.
        """
        limit = asyncio.Semaphore(MAX_CONCURRENT_UNPACKS)

        async def extract(index: int) -> tuple[str, int] | None:
            async with limit:
                return await self._extract_after_download(
                    index, layers, diff_ids, chains, downloads[index], parent_pending=True
                )

        tasks = {index: asyncio.create_task(extract(index)) for index in downloads}
        try:
            await asyncio.gather(*tasks.values())
        except BaseException:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            for task in tasks.values():
                if not task.cancelled() and task.exception() is None and task.result():
                    self.snapshots.abort(task.result()[0])  # type: ignore[index]
            raise

        prepared = {index: task.result() for index, task in tasks.items()}
        pending = {index: result for index, result in prepared.items() if result is not None}
        try:
            if pending:
                await asyncio.to_thread(self.snapshots.sync)
            for index in sorted(pending):
                key, size = pending.pop(index)
                self._commit_snapshot(key, layers[index], diff_ids[index], chains[index], size)
        finally:
            for key, _ in pending.values():
                self.snapshots.abort(key)

    async def _extract_after_download(
        self,
        index: int,
        layers: list[Descriptor],
        diff_ids: list[str],
        chains: list[str],
        download: asyncio.Task[None],
        *,
        parent_pending: bool,
    ) -> tuple[str, int] | None:
        """Wait for a layer's download and its unpack from the download, or else unpack the
        stored blob into a new active snapshot.

        Returns the snapshot's key and size, or None when another pull committed the same
        chain ID meanwhile.
        """
        await download
        layer = layers[index]
        # The task stays listed, so that _stop_streams drops its snapshot when this
        # coroutine is cancelled after the task finished but before its result arrived.
        stream = self._streams.get(index)
        if stream is not None:
            streamed = await stream
            if streamed is not None:
                return streamed
        if self.snapshots.stat(chains[index]) is not None:
            # Another pull unpacked this layer while it downloaded here.
            self._progress.layer(layer, "Pull complete")
            return None
        parent = chains[index - 1] if index else None
        return await self._extract(
            layer, diff_ids[index], chains[index], parent, parent_pending=parent_pending
        )

    async def _download(
        self, client: RegistryClient, layer: Descriptor, semaphore: asyncio.Semaphore, index: int
    ) -> None:
        self._hold(layer.digest)
        if self.content.exists(layer.digest):
            self._progress.layer(layer, "Download complete")
            return
        if semaphore.locked():
            self._progress.layer(layer, "Waiting")
        # Listed before the commit, so that a failed pull removes the blob even when it
        # fails while the commit runs.
        self._new_blobs.append(layer.digest)
        with self.content.writer(layer.digest, layer.size, resumable=True) as writer:
            feed = self._start_stream(index, layer, writer)
            try:
                await download_layer(client, layer, writer, feed, self._progress, semaphore)
            finally:
                if feed is not None:
                    feed.break_off("the download of the layer failed")
        self._progress.layer(layer, "Download complete")

    def _start_stream(self, index: int, layer: Descriptor, writer: BlobWriter) -> LayerFeed | None:
        """Start unpacking a layer from its download, when the snapshotter allows it. The
        unpack also hashes the blob for the writer."""
        if self.snapshots.needs_parent_files or writer.written or self._layer_ids is None:
            return None
        feed = LayerFeed(MAX_STREAM_BUFFER, writer.defer_hash())
        self._streams[index] = asyncio.create_task(self._unpack_stream(index, layer, feed))
        return feed

    async def _unpack_stream(
        self, index: int, layer: Descriptor, feed: LayerFeed
    ) -> tuple[str, int] | None:
        """Unpack a layer from its feed into a new active snapshot; return its key and size.

        Returns None when the feed broke off, so that the caller unpacks the stored blob.
        """
        assert self._layer_ids is not None
        try:
            diff_ids, chains = await asyncio.shield(self._layer_ids)
        except BaseException:
            feed.break_off("the pull stopped before the image config arrived")
            raise
        if self.snapshots.stat(chains[index]) is not None:
            feed.break_off("the layer is unpacked already")
            return None
        parent = chains[index - 1] if index else None
        try:
            return await self._extract(
                layer, diff_ids[index], chains[index], parent, parent_pending=True, feed=feed
            )
        except FeedBroken as error:
            log.debug("unpacking layer %s from the stored blob: %s", layer.digest, error)
            return None

    async def _stop_streams(self) -> None:
        """Stop the unpacks from downloads and drop their snapshots that were not committed
        (``abort`` leaves a committed snapshot alone)."""
        streams = list(self._streams.values())
        self._streams.clear()
        for task in streams:
            task.cancel()
        results = await asyncio.gather(*streams, return_exceptions=True)
        for result in results:
            if isinstance(result, tuple):
                self.snapshots.abort(result[0])

    async def _extract(
        self,
        layer: Descriptor,
        diff_id: str,
        chain_id: str,
        parent: str | None,
        *,
        parent_pending: bool,
        feed: LayerFeed | None = None,
    ) -> tuple[str, int]:
        return await unpack_into_snapshot(
            self.snapshots,
            layer,
            diff_id,
            chain_id,
            parent,
            blob=self.content.path(layer.digest),
            limits=self.unpack_limits,
            progress=self._progress,
            parent_pending=parent_pending,
            feed=feed,
            feed_threads=self._stream_threads,
        )

    def _commit_snapshot(
        self, key: str, layer: Descriptor, diff_id: str, chain_id: str, size: int
    ) -> None:
        snapshot = self.snapshots.commit(key, chain_id, diff_id, size)
        if snapshot.key == key:
            self._new_chains.append(chain_id)
        self._progress.layer(layer, "Pull complete")

    def _record(
        self,
        image_id: str,
        config: dict[str, Any],
        manifest: Manifest,
        diff_ids: list[str],
        chains: list[str],
        top_digest: str,
        document_blobs: list[str],
    ) -> None:
        layers = [
            LayerRecord(layer.digest, layer.media_type, layer.size, diff_ids[index], chains[index])
            for index, layer in enumerate(manifest.layers)
        ]
        size = 0
        for chain_id in chains:
            snapshot = self.snapshots.stat(chain_id)
            size += snapshot.size if snapshot else 0
        blobs = {*document_blobs, manifest.config.digest}
        blobs.update(layer.digest for layer in manifest.layers if self.content.exists(layer.digest))

        names = {f"{self.reference.name}@{top_digest}": "digest"}
        if self.reference.tag and not self.reference.digest:
            names[f"{self.reference.name}:{self.reference.tag}"] = "tag"
        record = ImageRecord(
            id=image_id,
            created=str(config.get("created") or "0001-01-01T00:00:00Z"),
            size=size,
            architecture=str(config.get("architecture") or ""),
            os=str(config.get("os") or ""),
            stored_at=datetime.now(UTC).isoformat(),
        )
        self.metadata.add_image(record, layers, blobs, names)
        log.info("pulled %s as image %s", self.reference.familiar(), image_id)

    def _store_blob(self, data: bytes, digest: str) -> None:
        self._hold(digest)
        if not self.content.exists(digest):
            self.content.put(data, digest)
            self._new_blobs.append(digest)

    def _hold(self, name: str) -> None:
        self.leases.hold(name)
        self._leased_names.append(name)

    def _discard(self, *, drop_partials: bool) -> None:
        """Remove what this failed pull made that nothing else uses.

        With ``drop_partials`` (the image's content was rejected, not its download cut
        off) the partial downloads of its blobs go too, since resuming them cannot help.
        """
        self.leases.release(self._leased_names)
        self._leased_names = []
        self.collect_garbage(self._new_blobs, self._new_chains)
        if drop_partials:
            for digest in self._new_blobs:
                self.content.discard_partial(digest)
