"""Layer unpacking: zstd and plain tars, and the bounds that stop decompression bombs."""

import gzip
from pathlib import Path

import pytest
import zstandard

from ketch.images.layers import DEFAULT_LIMITS, LayerRejected, UnpackLimits, unpack_layer
from support.images import File, diff_id_of, layer_tar

LAYER = "sha256:" + "d" * 64


def unpack(tmp_path: Path, blob: bytes, limits: UnpackLimits = DEFAULT_LIMITS):
    path = tmp_path / "layer.blob"
    path.write_bytes(blob)
    destination = tmp_path / "fs"
    destination.mkdir()
    return unpack_layer(path, destination, layer=LAYER, limits=limits)


def test_zstd_layer_unpacks(tmp_path: Path) -> None:
    plain = layer_tar({"etc/motd": File(b"zstd\n")})
    unpack(tmp_path, zstandard.ZstdCompressor().compress(plain))
    assert (tmp_path / "fs" / "etc" / "motd").read_bytes() == b"zstd\n"


def test_zstd_diff_id_is_plain_digest(tmp_path: Path) -> None:
    plain = layer_tar({"a": File(b"x")})
    result = unpack(tmp_path, zstandard.ZstdCompressor().compress(plain))
    assert result.diff_id == diff_id_of(plain)


def test_zstd_multiple_frames(tmp_path: Path) -> None:
    plain = layer_tar({"a": File(b"x" * 5000), "b": File(b"y" * 5000)})
    compressor = zstandard.ZstdCompressor()
    half = len(plain) // 2
    unpack(tmp_path, compressor.compress(plain[:half]) + compressor.compress(plain[half:]))
    assert (tmp_path / "fs" / "b").read_bytes() == b"y" * 5000


def test_corrupt_zstd_rejected(tmp_path: Path) -> None:
    blob = zstandard.ZstdCompressor().compress(layer_tar({"a": File(b"x" * 1000)}))
    with pytest.raises(LayerRejected, match="not valid compressed data|not a valid tar"):
        unpack(tmp_path, blob[:8] + b"\xff" * 40 + blob[48:])


def test_bytes_bomb_rejected(tmp_path: Path) -> None:
    # Many files each under the bound, so the stream count trips before the content one.
    zeros = {f"zeros{index}": File(b"\0" * 200_000) for index in range(20)}
    blob = gzip.compress(layer_tar(zeros))
    with pytest.raises(LayerRejected, match="more than 1000000 uncompressed bytes"):
        unpack(tmp_path, blob, UnpackLimits(max_bytes=1_000_000))


def test_bytes_bomb_message(tmp_path: Path) -> None:
    blob = gzip.compress(layer_tar({"zeros": File(b"\0" * 4_000_000)}))
    with pytest.raises(LayerRejected) as caught:
        unpack(tmp_path, blob, UnpackLimits(max_bytes=1_000_000))
    assert LAYER in str(caught.value)
    assert "decompression bomb" in str(caught.value)


def test_file_content_bounded(tmp_path: Path) -> None:
    # The declared size is checked before the content is read.
    blob = layer_tar({"big": File(b"\0" * 600_000)})
    with pytest.raises(LayerRejected, match="more than 500000 bytes of file content"):
        unpack(tmp_path, blob, UnpackLimits(max_bytes=500_000))


def test_entry_bomb_rejected(tmp_path: Path) -> None:
    blob = gzip.compress(layer_tar({f"f{index}": File() for index in range(50)}))
    with pytest.raises(LayerRejected, match="more than 20 entries"):
        unpack(tmp_path, blob, UnpackLimits(max_entries=20))


def test_limits_reached_exactly_accepted(tmp_path: Path) -> None:
    blob = layer_tar({f"f{index}": File() for index in range(5)})
    unpack(tmp_path, blob, UnpackLimits(max_bytes=len(blob), max_entries=5))
    assert len(list((tmp_path / "fs").iterdir())) == 5
