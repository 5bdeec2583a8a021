"""The reader that keeps a copied file at the size its tar header states."""

from __future__ import annotations

import io
import tarfile

from ketch.engine.archive import PaddedReader


def test_reader_pads_shrunk_file() -> None:
    reader = PaddedReader(io.BytesIO(b"abc"), 6)
    assert reader.read(4) + reader.read(4) == b"abc\0\0\0"


def test_reader_cuts_grown_file() -> None:
    reader = PaddedReader(io.BytesIO(b"abcdefgh"), 5)
    assert reader.read() == b"abcde"


def test_reader_ends_at_size() -> None:
    reader = PaddedReader(io.BytesIO(b"ab"), 2)
    reader.read(2)
    assert reader.read(10) == b""


def test_tar_member_of_shrunk_file() -> None:
    member = tarfile.TarInfo("shrunk")
    member.size = 8
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(member, PaddedReader(io.BytesIO(b"half"), member.size))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        extracted = tar.extractfile("shrunk")
        assert extracted is not None
        assert extracted.read() == b"half\0\0\0\0"
