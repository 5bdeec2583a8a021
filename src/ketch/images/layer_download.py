"""Downloading one layer blob into the content store: resumed with HTTP Range after an
interruption, verified against its digest, and handed to an unpack as it arrives.

A download that breaks off resumes from the bytes the writer has, up to
``DOWNLOAD_ATTEMPTS`` times in all. A resumed blob that fails verification is downloaded
once more from byte 0 before the layer counts as bad, because the bytes kept from an
earlier pull may be what is wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ketch.errors import InvalidArgument, Unavailable
from ketch.images.content import BlobWriter
from ketch.images.feed import LayerFeed
from ketch.images.manifest import Descriptor
from ketch.images.pull_progress import PullProgress
from ketch.images.registry import RegistryClient

log = logging.getLogger(__name__)

# A layer download that breaks off is resumed from its last byte this many times in all,
# waiting RETRY_DELAY_SECONDS times the attempt number in between.
DOWNLOAD_ATTEMPTS = 5
RETRY_DELAY_SECONDS = 1.0


async def download_layer(
    client: RegistryClient,
    layer: Descriptor,
    writer: BlobWriter,
    feed: LayerFeed | None,
    progress: PullProgress,
    slot: asyncio.Semaphore,
) -> None:
    """Download a layer into ``writer`` and commit it.

    ``slot`` is held only while bytes arrive, so that the next download starts while this
    blob is verified and synced. A ``feed`` gets the same bytes and ends with the last of
    them, before the verification: its reader's work must not be used until this returns.
    It breaks off when the download starts over.
    """

    def receive(chunk: bytes) -> None:
        writer.write(chunk)
        if feed is not None:
            feed.put(chunk)
        progress.layer_bytes(layer, "Downloading", writer.written, layer.size)

    def restart() -> None:
        if feed is not None:
            feed.break_off("the download of the layer started over")
        writer.restart()

    resumed_from = writer.written
    async with slot:
        await _download_with_retries(client, layer, writer, receive, restart, progress)
    if feed is not None:
        feed.close()
    progress.layer(layer, "Verifying Checksum")
    try:
        await commit_to_end(writer)
    except InvalidArgument as error:
        if not resumed_from:
            raise _verification_failed(client, layer, error) from None
        # The bytes kept from an earlier pull may be what is wrong, so the
        # whole blob is downloaded once more before the layer counts as bad.
        log.warning("resumed layer %s failed verification, downloading it again: %s",
                    layer.digest, error)  # fmt: skip
        restart()
        async with slot:
            await _download_with_retries(client, layer, writer, receive, restart, progress)
        await _commit_layer(client, layer, writer)


async def _commit_layer(client: RegistryClient, layer: Descriptor, writer: BlobWriter) -> None:
    try:
        await commit_to_end(writer)
    except InvalidArgument as error:
        raise _verification_failed(client, layer, error) from None


def _verification_failed(
    client: RegistryClient, layer: Descriptor, error: InvalidArgument
) -> InvalidArgument:
    return InvalidArgument(
        f"filesystem layer verification failed for digest {layer.digest} "
        f"from {client.endpoint.name}: {error}"
    )


async def _download_with_retries(
    client: RegistryClient,
    layer: Descriptor,
    writer: BlobWriter,
    receive: Callable[[bytes], None],
    restart: Callable[[], None],
    progress: PullProgress,
) -> None:
    """Download the rest of a layer blob, resuming from the bytes the writer has after
    each interruption, up to DOWNLOAD_ATTEMPTS times. ``restart`` empties the writer
    when the registry sends the whole blob again."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        if layer.size and writer.written >= layer.size:
            return
        try:
            await client.download_blob(layer, receive, offset=writer.written, restart=restart)
            return
        except Unavailable as error:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise
            log.warning(
                "download of layer %s from %s stopped at byte %d of %d (attempt %d of %d), "
                "resuming: %s",
                layer.digest, client.endpoint.name, writer.written, layer.size, attempt,
                DOWNLOAD_ATTEMPTS, error,
            )  # fmt: skip
            delay = RETRY_DELAY_SECONDS * attempt
            progress.layer(layer, f"Retrying in {delay:g} second{'s' if delay != 1 else ''}")
            await asyncio.sleep(delay)


async def commit_to_end(writer: BlobWriter) -> None:
    """Commit a blob in a worker thread. A cancelled caller still waits for the thread,
    so the blob never lands in the store after a failed pull cleaned up."""
    work = asyncio.ensure_future(asyncio.to_thread(_commit_with_cpu_log, writer))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait({work})
        raise


def _commit_with_cpu_log(writer: BlobWriter) -> None:
    started = time.thread_time()
    writer.commit()
    cpu_seconds = time.thread_time() - started
    log.debug(
        "committed blob %s: %.0f ms of CPU", writer.digest, cpu_seconds * 1000,
        extra={"pull_stage": "blob commit", "cpu_seconds": cpu_seconds},
    )  # fmt: skip
