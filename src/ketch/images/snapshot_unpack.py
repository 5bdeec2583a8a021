"""Unpacking one layer into a new active snapshot in a worker thread, from its download as
it arrives or else from the stored blob, with progress and cancellation handled.

The worker thread cannot be stopped once it runs, so a cancelled unpack breaks its feed
(which ends the thread's reads) and removes the snapshot directory only after the thread
has finished, before the failed pull returns.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from ketch.images.feed import LayerFeed
from ketch.images.layers import UnpackedLayer, UnpackLimits, unpack_layer, unpack_layer_stream
from ketch.images.manifest import Descriptor
from ketch.images.pull_progress import PROGRESS_INTERVAL_SECONDS, PullProgress
from ketch.images.snapshots import Snapshotter

log = logging.getLogger(__name__)


async def unpack_into_snapshot(
    snapshots: Snapshotter,
    layer: Descriptor,
    diff_id: str,
    chain_id: str,
    parent: str | None,
    *,
    blob: Path,
    limits: UnpackLimits,
    progress: PullProgress,
    parent_pending: bool,
    feed: LayerFeed | None = None,
    feed_threads: Executor | None = None,
) -> tuple[str, int]:
    """Unpack a layer into a new active snapshot and return its key and size.

    The layer comes from ``feed`` while it downloads, in a thread of ``feed_threads``, or
    else from the stored ``blob``. With ``parent_pending`` the parent may still be
    unpacking, so the files are not synced and the caller syncs before it commits.
    """
    key = f"extract-{secrets.token_hex(4)}-{chain_id}"
    path = snapshots.prepare(key, parent, parent_pending=parent_pending)
    loop = asyncio.get_running_loop()
    last_report = 0.0

    def report(done: int, total: int) -> None:
        # Runs in the worker thread for every entry, so it throttles before it posts.
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= PROGRESS_INTERVAL_SECONDS:
            last_report = now
            loop.call_soon_threadsafe(progress.layer_bytes, layer, "Extracting", done, total)

    def unpack() -> UnpackedLayer:
        options: dict[str, Any] = {
            "layer": layer.digest,
            "expected_diff_id": diff_id,
            "progress": report,
            "whiteouts": snapshots.whiteout_form,
            "limits": limits,
            "sync": not parent_pending,
        }
        started = time.thread_time()
        if feed is None:
            unpacked = unpack_layer(blob, path, **options)
        else:
            magic = feed.peek(4)
            unpacked = unpack_layer_stream(feed, magic, layer.size, path, **options)  # type: ignore[arg-type]
        cpu_seconds = time.thread_time() - started
        log.debug(
            "unpacked layer %s into snapshot %s: %d bytes of files, %.0f ms of CPU",
            layer.digest, key, unpacked.size, cpu_seconds * 1000,
            extra={"pull_stage": "unpack", "cpu_seconds": cpu_seconds},
        )  # fmt: skip
        return unpacked

    if feed is None:
        work = asyncio.ensure_future(asyncio.to_thread(unpack))
    else:
        # Threads of their own: one that waits for its download's bytes must never
        # hold the default executor's threads that the downloads themselves need.
        work = asyncio.ensure_future(loop.run_in_executor(feed_threads, unpack))
    try:
        unpacked = await asyncio.shield(work)
    except asyncio.CancelledError:
        # The worker thread cannot be stopped, but a broken feed ends its reads. Its
        # directory is removed once it finishes, before the failed pull returns.
        if feed is not None:
            feed.break_off("the pull was cancelled", even_if_closed=True)
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError:
            work.add_done_callback(lambda _: snapshots.abort(key))
            raise
        snapshots.abort(key)
        raise
    except BaseException:
        snapshots.abort(key)
        raise

    return key, unpacked.size
