"""The streams of a layer unpack: gzip members and padding, chunk boundaries, the tar
stream's forward-only reads, and sparse files through tarfile's own reader."""

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from ketch.images.feed import LayerFeed
from ketch.images.layer_entries import CHUNK_SIZE
from ketch.images.layer_stream import CompressedSource, TarStream, inflate_gzip
from ketch.images.layers import LayerRejected, unpack_layer, unpack_layer_stream
from support.images import File, diff_id_of, layer_tar

LAYER = "sha256:" + "e" * 64


def unpack_blob(tmp_path: Path, blob: bytes, expected: str | None = None) -> Path:
    path = tmp_path / "layer.blob"
    path.write_bytes(blob)
    destination = tmp_path / "fs"
    destination.mkdir()
    unpack_layer(path, destination, layer=LAYER, expected_diff_id=expected)
    return destination


def inflate_all(blob: bytes) -> bytes:
    return b"".join(inflate_gzip(CompressedSource(io.BytesIO(blob))))


def test_gzip_members_concatenated() -> None:
    blob = gzip.compress(b"first ") + gzip.compress(b"second")
    assert inflate_all(blob) == b"first second"


def test_gzip_zero_padding_skipped() -> None:
    blob = gzip.compress(b"data") + b"\0" * 3000
    assert inflate_all(blob) == b"data"


def test_gzip_member_after_padding() -> None:
    blob = gzip.compress(b"one") + b"\0" * 10 + gzip.compress(b"two")
    assert inflate_all(blob) == b"onetwo"


def test_gzip_truncated_raises() -> None:
    blob = gzip.compress(os.urandom(4096))
    with pytest.raises(EOFError):
        inflate_all(blob[:-100])


def test_gzip_trailing_garbage_raises() -> None:
    blob = gzip.compress(b"data") + b"garbage" * 100
    # zlib and isal word it differently: "incorrect header check", "invalid ... wrapper".
    with pytest.raises(Exception, match="header|wrapper"):
        inflate_all(blob)


def test_gzip_chunks_bounded() -> None:
    blob = gzip.compress(b"\0" * (3 * CHUNK_SIZE + 5))
    chunks = list(inflate_gzip(CompressedSource(io.BytesIO(blob))))
    assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE
    assert sum(len(chunk) for chunk in chunks) == 3 * CHUNK_SIZE + 5


def test_truncated_gzip_layer_rejected(tmp_path: Path) -> None:
    blob = gzip.compress(layer_tar({"a": File(os.urandom(8192))}))
    with pytest.raises(LayerRejected, match="not a valid tar archive"):
        unpack_blob(tmp_path, blob[:-50])


def test_files_across_chunk_boundaries(tmp_path: Path) -> None:
    # Sizes around CHUNK_SIZE and not multiples of the 512-byte tar block.
    sizes = (1, CHUNK_SIZE - 1, CHUNK_SIZE + 1, 513)
    files = {f"f{size}": File(os.urandom(size)) for size in sizes}
    blob = gzip.compress(layer_tar(files), compresslevel=1)
    destination = unpack_blob(tmp_path, blob, diff_id_of(blob))
    for name, entry in files.items():
        assert (destination / name).read_bytes() == entry.data


def test_trailing_bytes_in_diff_id(tmp_path: Path) -> None:
    plain = layer_tar({"a": File(b"x")}) + b"\0" * 4096
    destination = unpack_blob(tmp_path, gzip.compress(plain), diff_id_of(plain))
    assert (destination / "a").read_bytes() == b"x"


def test_feed_with_small_chunks(tmp_path: Path) -> None:
    plain = layer_tar({"a": File(os.urandom(100_000)), "b": File(b"bee")})
    blob = gzip.compress(plain)
    feed = LayerFeed(len(blob))
    for offset in range(0, len(blob), 777):
        feed.put(blob[offset : offset + 777])
    feed.close()
    destination = tmp_path / "fs"
    destination.mkdir()
    unpacked = unpack_layer_stream(
        feed, blob[:4], len(blob), destination, layer=LAYER, expected_diff_id=diff_id_of(blob)
    )
    assert unpacked.size == 100_003
    assert (destination / "b").read_bytes() == b"bee"


def test_tar_stream_reads_across_chunks() -> None:
    stream = TarStream(iter([b"abc", b"defg", b"h"]), max_bytes=100)
    assert stream.read(5) == b"abcde"
    assert stream.tell() == 5
    assert stream.read(10) == b"fgh"
    assert stream.read(1) == b""


def test_tar_stream_seeks_forward_only() -> None:
    stream = TarStream(iter([b"abcdef"]), max_bytes=100)
    stream.seek(4)
    assert stream.read(1) == b"e"
    with pytest.raises(tarfile.StreamError):
        stream.seek(2)


def test_tar_stream_hashes_skipped_bytes() -> None:
    stream = TarStream(iter([b"abc", b"def"]), max_bytes=100)
    stream.seek(5)
    stream.drain()
    assert stream.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()


def test_sparse_file_unpacked(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with open(source / "sparse", "wb") as sparse:
        sparse.seek(CHUNK_SIZE)
        sparse.write(b"end")
    (source / "after").write_bytes(b"next entry")
    blob = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-cf", str(blob), "-C", str(source), "sparse", "after"],
        check=True,
    )
    destination = unpack_blob(tmp_path, blob.read_bytes())
    assert (destination / "sparse").read_bytes() == b"\0" * CHUNK_SIZE + b"end"
    assert (destination / "after").read_bytes() == b"next entry"


def test_gzip_bad_size_raises() -> None:
    blob = bytearray(gzip.compress(b"data" * 1000))
    blob[-1] ^= 1  # the last byte of ISIZE, the uncompressed size in the trailer
    with pytest.raises(Exception, match="check"):
        inflate_all(bytes(blob))
