"""The image layer: references, content store, registry client, layer unpacking,
snapshots and container root filesystems.

The engine uses :class:`ImageStore` and :class:`Image`; the modules below it each own one
concern and, where they own files, document their layout:

* ``reference``: parsing and Docker's normalisation of image references;
* ``content``: blobs by digest, verified on the way in, and resumable partial downloads;
* ``manifest``: manifests, indexes and configs, platform selection;
* ``registry``: the distribution API client (pull and push);
* ``endpoints``: the registry endpoint for a repository (mirrors, plain HTTP or HTTPS);
* ``auth``: registry credentials in docker's config.json, login and logout;
* ``layers``: unpacking of layer tars (plain, gzip, zstd), bounded against bombs;
* ``layer_stream``: the decompressed chunks and the forward-only tar stream of an unpack;
* ``layer_entries``: writing a layer's entries safely, whiteouts in either form;
* ``diff``: a container's changes written as a layer tar, for commit and build;
* ``snapshots``: the snapshotter interface, unpacked layers by chain ID;
* ``overlay``, ``copying``: the overlayfs and the copying snapshotter;
* ``rootfs``: container root filesystems made by the snapshotter;
* ``pull``, ``push``: the pull and push sequences and their progress messages;
* ``pull_source``, ``layer_download``, ``feed``, ``snapshot_unpack``,
  ``pull_progress``, ``leases``: the parts of a pull (which endpoint, one layer's
  download, the stream to its unpack, the unpack into a snapshot, the messages, and
  what a pull in progress keeps from removal);
* ``writeback``: starting to write fresh files to disk before they are synced;
* ``archive``, ``loading``: docker save archives and OCI layouts in and out, rootfs import;
* ``metadata``: the ``image_`` tables;
* ``baseimage``: builds busybox (and a minimal Debian) locally and pushes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ketch.images.store import Image, ImageStore

__all__ = ["Image", "ImageStore"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``from ketch.images.reference import ...`` in a
    # short-lived command does not pay for the store and the modules it imports.
    if name in __all__:
        from ketch.images import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
