"""The progress messages of a pull, in the Engine API's JSON form, sent to a callback.

Byte counts (``Downloading``, ``Extracting``) are throttled per layer, and a callback that
fails stops the messages without failing the pull. ``ketch.images.pull`` lists the
messages in the order a pull sends them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ketch.images.manifest import Descriptor

log = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]

# Byte-count progress is sent at most this often per layer, so a fast download does not
# flood the client with messages.
PROGRESS_INTERVAL_SECONDS = 0.1


class PullProgress:
    """Sender of one pull's messages to ``callback``. ``subject`` names the image in logs."""

    def __init__(self, callback: ProgressCallback | None, subject: str) -> None:
        self.callback = callback
        self.subject = subject
        self._last_progress: dict[str, float] = {}
        self._failed = False

    def status(self, status: str, item_id: str | None = None) -> None:
        message: dict[str, Any] = {"status": status}
        if item_id is not None:
            message["id"] = item_id
        self._send(message)

    def layer(self, layer: Descriptor, status: str) -> None:
        self._send({"status": status, "progressDetail": {}, "id": short_id(layer.digest)})

    def layer_bytes(self, layer: Descriptor, status: str, current: int, total: int) -> None:
        key = f"{status} {layer.digest}"
        now = time.monotonic()
        if current < total and now - self._last_progress.get(key, 0.0) < PROGRESS_INTERVAL_SECONDS:
            return
        self._last_progress[key] = now
        detail = {"current": current, "total": total}
        self._send({"status": status, "progressDetail": detail, "id": short_id(layer.digest)})

    def _send(self, message: dict[str, Any]) -> None:
        if self.callback is None or self._failed:
            return
        try:
            self.callback(message)
        except Exception:
            # A client that went away must not fail the pull: the image is still recorded
            # and the next pull finds it. Later messages of this pull are dropped.
            self._failed = True
            log.exception("progress callback failed for pull of %s", self.subject)


def short_id(digest: str) -> str:
    """Return the first 12 hex digits of a digest, the ID docker shows for a layer."""
    return digest.removeprefix("sha256:")[:12]
