"""Image metadata: one transaction per change, names that move between images."""

import sqlite3

import pytest

from ketch.images.metadata import ImageMetadata, ImageRecord, LayerRecord, transaction

IMAGE_A = "sha256:" + "a" * 64
IMAGE_B = "sha256:" + "b" * 64
LAYER = LayerRecord(
    "sha256:" + "c" * 64, "application/x", 10, "sha256:" + "d" * 64, "sha256:" + "d" * 64
)
TAG = "docker.io/library/busybox:latest"


def record(image_id: str) -> ImageRecord:
    return ImageRecord(image_id, "2024-01-01T00:00:00Z", 10, "amd64", "linux", "2024-01-01")


@pytest.fixture(params=["", None], ids=["implicit", "autocommit"])
def metadata(request: pytest.FixtureRequest) -> ImageMetadata:
    return ImageMetadata(sqlite3.connect(":memory:", isolation_level=request.param))


def test_add_image_records_everything(metadata: ImageMetadata) -> None:
    metadata.add_image(record(IMAGE_A), [LAYER], {LAYER.blob_digest}, {TAG: "tag"})
    assert metadata.image(IMAGE_A) == record(IMAGE_A)
    assert metadata.layers(IMAGE_A) == [LAYER]
    assert metadata.blobs(IMAGE_A) == [LAYER.blob_digest]
    assert metadata.names(IMAGE_A) == [(TAG, "tag")]


def test_tag_moves_to_new_image(metadata: ImageMetadata) -> None:
    metadata.add_image(record(IMAGE_A), [], set(), {TAG: "tag"})
    metadata.add_image(record(IMAGE_B), [], set(), {TAG: "tag"})
    assert metadata.image_id_for_name(TAG) == IMAGE_B
    assert metadata.names(IMAGE_A) == []


def test_remove_image_removes_rows(metadata: ImageMetadata) -> None:
    metadata.add_image(record(IMAGE_A), [LAYER], {LAYER.blob_digest}, {TAG: "tag"})
    metadata.remove_image(IMAGE_A)
    assert metadata.image(IMAGE_A) is None
    assert not metadata.chain_in_use(LAYER.chain_id)
    assert not metadata.blob_in_use(LAYER.blob_digest)
    assert metadata.image_id_for_name(TAG) is None


def test_failed_transaction_rolls_back(metadata: ImageMetadata) -> None:
    with pytest.raises(RuntimeError):
        with transaction(metadata.db) as db:
            db.execute("INSERT INTO image_names VALUES (?, 'tag', ?)", (TAG, IMAGE_A))
            raise RuntimeError("interrupted")
    assert metadata.image_id_for_name(TAG) is None


def test_id_prefix_lookup(metadata: ImageMetadata) -> None:
    metadata.add_image(record(IMAGE_A), [], set(), {})
    metadata.add_image(record(IMAGE_B), [], set(), {})
    assert metadata.image_ids_with_prefix("aaa") == [IMAGE_A]
    assert metadata.image_ids_with_prefix("c") == []
