"""Commit: record a container's changes as a new image, one layer on top of its image.

``commit_image`` takes the layer tar that ``ImageStore.diff_rootfs`` wrote and an image
config, and records them the way a loaded archive is recorded. The parent image's layer
blobs are reused from the content store, so only the new layer is stored and unpacked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch.errors import InvalidArgument
from ketch.images.archive import ArchiveImage
from ketch.images.reference import parse_reference

if TYPE_CHECKING:
    from ketch.images.store import ImageStore

log = logging.getLogger(__name__)

_CHUNK_SIZE = 1024 * 1024


@dataclass
class CommitRequest:
    """The config and history entry that a commit records besides the layer."""

    container_id: str
    # The container's "config" object (Cmd, Env, ...), which becomes the image's.
    config: dict[str, Any]
    comment: str = ""
    author: str = ""
    reference: str | None = None
    # The history entry's "created_by": docker commit puts the container's Cmd there.
    created_by: str = ""


async def commit_image(
    store: ImageStore, parent_id: str, layer_tar: Path, request: CommitRequest
) -> str:
    """Record ``layer_tar`` on top of image ``parent_id`` and return the new image's ID.

    Raises NotFound when the parent image is gone and InvalidArgument for a reference
    that is not a tag.
    """
    name = _checked_name(request.reference)
    parent_config = json.loads(store.content.read(parent_id))
    parent_layers = store.metadata.layers(parent_id)
    diff_id = _file_digest(layer_tar)

    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    config = dict(parent_config)
    config["created"] = created
    config["container"] = request.container_id
    config["config"] = request.config
    if request.author:
        config["author"] = request.author
    else:
        config.pop("author", None)
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": [layer.diff_id for layer in parent_layers] + [diff_id],
    }
    if request.comment:
        config["comment"] = request.comment
    else:
        config.pop("comment", None)
    step: dict[str, Any] = {"created": created, "created_by": request.created_by}
    if request.comment:
        step["comment"] = request.comment
    if request.author:
        step["author"] = request.author
    config["history"] = [*(parent_config.get("history") or []), step]

    document = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    layers = [store.content.path(layer.blob_digest) for layer in parent_layers] + [layer_tar]
    image = ArchiveImage(document, layers, [name] if name else [])
    # The archive loader records blobs, snapshots and metadata with the clean-up on failure
    # that a load needs, which a commit needs too.
    loaded = await store.files._record(image)
    log.info("committed container %s as image %s", request.container_id, loaded.id)
    return loaded.id


def _checked_name(reference: str | None) -> str | None:
    if not reference:
        return None
    parsed = parse_reference(reference)
    if parsed.digest:
        raise InvalidArgument(
            f"invalid reference {reference!r} for commit: expected a tag, not a digest"
        )
    return str(parsed)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK_SIZE):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
