"""The content store: blobs verified against their digest before they are stored."""

import hashlib
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.images.content import ContentStore


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path)


def test_put_stores_blob_under_digest(store: ContentStore, tmp_path: Path) -> None:
    digest = store.put(b"hello")
    assert digest == digest_of(b"hello")
    assert (tmp_path / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes() == b"hello"


def test_put_mismatch_stores_nothing(store: ContentStore) -> None:
    wrong = digest_of(b"something else")
    with pytest.raises(InvalidArgument, match="does not match its digest"):
        store.put(b"hello", wrong)
    assert store.digests() == []
    assert list(store.ingest_dir.iterdir()) == []


def test_writer_mismatch_stores_nothing(store: ContentStore) -> None:
    wrong = digest_of(b"expected")
    with pytest.raises(InvalidArgument, match=wrong):
        with store.writer(wrong, size=8) as writer:
            writer.write(b"tampered")
            writer.commit()
    assert not store.exists(wrong)
    assert list(store.ingest_dir.iterdir()) == []


def test_writer_rejects_oversize(store: ContentStore) -> None:
    digest = digest_of(b"abc")
    with pytest.raises(InvalidArgument, match="longer than the 3 bytes"):
        with store.writer(digest, size=3) as writer:
            writer.write(b"abcd")
    assert list(store.ingest_dir.iterdir()) == []


def test_writer_rejects_short_blob(store: ContentStore) -> None:
    digest = digest_of(b"abc")
    with pytest.raises(InvalidArgument, match="is 2 bytes, expected 3"):
        with store.writer(digest, size=3) as writer:
            writer.write(b"ab")
            writer.commit()
    assert not store.exists(digest)


def test_writer_in_chunks(store: ContentStore) -> None:
    digest = digest_of(b"abcdef")
    with store.writer(digest, size=6) as writer:
        writer.write(b"abc")
        writer.write(b"def")
        path = writer.commit()
    assert path.read_bytes() == b"abcdef"
    assert store.size(digest) == 6


def test_abandoned_writer_leaves_nothing(store: ContentStore) -> None:
    digest = digest_of(b"abc")
    with store.writer(digest) as writer:
        writer.write(b"ab")
    assert list(store.ingest_dir.iterdir()) == []
    assert not store.exists(digest)


def test_ingest_leftovers_removed_on_open(tmp_path: Path) -> None:
    ContentStore(tmp_path)
    (tmp_path / "ingest" / "partial").write_bytes(b"half a blob")
    ContentStore(tmp_path)
    assert list((tmp_path / "ingest").iterdir()) == []


def test_invalid_digest_rejected(store: ContentStore) -> None:
    with pytest.raises(InvalidArgument, match="invalid digest '../escape'"):
        store.path("../escape")


def test_read_missing_blob(store: ContentStore) -> None:
    with pytest.raises(NotFound, match="not found in the content store"):
        store.read(digest_of(b"absent"))


def test_delete_is_idempotent(store: ContentStore) -> None:
    digest = store.put(b"x")
    store.delete(digest)
    store.delete(digest)
    assert not store.exists(digest)
