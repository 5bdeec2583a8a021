"""Image metadata in the engine's SQLite database: images, their names, layers and blobs.

Every change is one transaction, so a crash leaves an image either fully recorded (its
row, layers, blobs and names) or absent. The tables, all prefixed ``image_``:

* ``image_images``: one row per image, keyed by the image ID (``sha256:`` + the config
  digest), with the config's creation time, os and architecture and the unpacked size;
* ``image_names``: full references (``docker.io/library/busybox:latest`` or
  ``docker.io/library/busybox@sha256:...``), each pointing at one image;
* ``image_layers``: an image's layers bottom first, with blob digest, diff ID and chain ID;
* ``image_blobs``: every content-store blob an image needs (index, manifest, config,
  layers). Removing the image deletes the ones that no other image lists.

The connection belongs to the engine and is used only from the event loop thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS image_images (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    size INTEGER NOT NULL,
    architecture TEXT NOT NULL,
    os TEXT NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_names (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest')),
    image_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS image_names_by_image ON image_names (image_id);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    blob_digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    blob_size INTEGER NOT NULL,
    diff_id TEXT NOT NULL,
    chain_id TEXT NOT NULL,
    PRIMARY KEY (image_id, position)
);
CREATE INDEX IF NOT EXISTS image_layers_by_chain ON image_layers (chain_id);
CREATE TABLE IF NOT EXISTS image_blobs (
    image_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
);
CREATE INDEX IF NOT EXISTS image_blobs_by_digest ON image_blobs (digest);
"""


@dataclass(frozen=True)
class LayerRecord:
    blob_digest: str
    media_type: str
    blob_size: int
    diff_id: str
    chain_id: str


@dataclass(frozen=True)
class ImageRecord:
    id: str
    created: str
    size: int
    architecture: str
    os: str
    stored_at: str


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block as one write transaction: committed on success, rolled back on error.

    BEGIN is explicit so the block is one transaction whatever ``isolation_level`` the
    engine opened the connection with.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.rollback()
        raise
    db.commit()


class ImageMetadata:
    """Queries and changes on the ``image_`` tables."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        with transaction(db):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def add_image(
        self,
        image: ImageRecord,
        layers: list[LayerRecord],
        blobs: set[str],
        names: dict[str, str],
    ) -> None:
        """Record an image with its layers and blobs, and point ``names`` at it.

        ``names`` maps each full reference to its kind, ``tag`` or ``digest``. A name that
        pointed at another image moves to this one. All of it is one transaction.
        """
        with transaction(self.db) as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO image_images VALUES (?, ?, ?, ?, ?, ?)",
                (image.id, image.created, image.size, image.architecture, image.os,
                 image.stored_at),
            ).rowcount  # fmt: skip
            if inserted:
                db.executemany(
                    "INSERT INTO image_layers VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (image.id, position, layer.blob_digest, layer.media_type,
                         layer.blob_size, layer.diff_id, layer.chain_id)
                        for position, layer in enumerate(layers)
                    ],
                )  # fmt: skip
            db.executemany(
                "INSERT OR IGNORE INTO image_blobs VALUES (?, ?)",
                [(image.id, digest) for digest in sorted(blobs)],
            )
            db.executemany(
                "INSERT OR REPLACE INTO image_names VALUES (?, ?, ?)",
                [(name, kind, image.id) for name, kind in names.items()],
            )

    def image(self, image_id: str) -> ImageRecord | None:
        row = self.db.execute(
            "SELECT id, created, size, architecture, os, stored_at FROM image_images WHERE id = ?",
            (image_id,),
        ).fetchone()
        return ImageRecord(*row) if row else None

    def images(self) -> list[ImageRecord]:
        rows = self.db.execute(
            "SELECT id, created, size, architecture, os, stored_at FROM image_images"
            " ORDER BY stored_at DESC, id"
        ).fetchall()
        return [ImageRecord(*row) for row in rows]

    def image_ids_with_prefix(self, hex_prefix: str) -> list[str]:
        """Return image IDs whose hex part starts with ``hex_prefix``.

        The caller passes lowercase hex digits only, so the prefix contains no LIKE wildcard.
        """
        pattern = f"sha256:{hex_prefix}%"
        rows = self.db.execute("SELECT id FROM image_images WHERE id LIKE ?", (pattern,))
        return [row[0] for row in rows]

    def image_id_for_name(self, name: str) -> str | None:
        row = self.db.execute("SELECT image_id FROM image_names WHERE name = ?", (name,))
        found = row.fetchone()
        return found[0] if found else None

    def names(self, image_id: str) -> list[tuple[str, str]]:
        """Return ``(name, kind)`` pairs of an image, sorted by name."""
        rows = self.db.execute(
            "SELECT name, kind FROM image_names WHERE image_id = ? ORDER BY name", (image_id,)
        )
        return [(name, kind) for name, kind in rows]

    def layers(self, image_id: str) -> list[LayerRecord]:
        rows = self.db.execute(
            "SELECT blob_digest, media_type, blob_size, diff_id, chain_id FROM image_layers"
            " WHERE image_id = ? ORDER BY position",
            (image_id,),
        )
        return [LayerRecord(*row) for row in rows]

    def blobs(self, image_id: str) -> list[str]:
        rows = self.db.execute("SELECT digest FROM image_blobs WHERE image_id = ?", (image_id,))
        return [row[0] for row in rows]

    def image_ids_with_blob(self, digest: str) -> list[str]:
        """Return the images that reference the blob ``digest``, sorted."""
        rows = self.db.execute(
            "SELECT image_id FROM image_blobs WHERE digest = ? ORDER BY image_id", (digest,)
        )
        return [row[0] for row in rows]

    def layer_blob_known(self, digest: str) -> bool:
        """Return whether a layer of any image was pulled from the blob ``digest``."""
        row = self.db.execute("SELECT 1 FROM image_layers WHERE blob_digest = ? LIMIT 1", (digest,))
        return row.fetchone() is not None

    def blob_in_use(self, digest: str) -> bool:
        row = self.db.execute("SELECT 1 FROM image_blobs WHERE digest = ? LIMIT 1", (digest,))
        return row.fetchone() is not None

    def chain_in_use(self, chain_id: str) -> bool:
        row = self.db.execute("SELECT 1 FROM image_layers WHERE chain_id = ? LIMIT 1", (chain_id,))
        return row.fetchone() is not None

    def remove_name(self, name: str) -> None:
        with transaction(self.db) as db:
            db.execute("DELETE FROM image_names WHERE name = ?", (name,))

    def remove_image(self, image_id: str) -> None:
        """Delete an image with its names, layers and blob references in one transaction."""
        with transaction(self.db) as db:
            for table in ("image_names", "image_layers", "image_blobs"):
                db.execute(f"DELETE FROM {table} WHERE image_id = ?", (image_id,))
            db.execute("DELETE FROM image_images WHERE id = ?", (image_id,))
