"""Layers through a pull from a real registry: a zstd layer unpacks like a gzip one."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

import support.registry
from ketch.images import ImageStore
from support.images import (
    File,
    diff_id_of,
    gzip_layer,
    image_config,
    image_store,
    layer_tar,
    push_test_image,
)

# The registry fixture: a docker-registry on 127.0.0.1, stopped by PID after the test.
registry = support.registry.registry


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path) as opened:
        yield opened


def test_pull_zstd_layer(store: ImageStore, registry: str) -> None:
    base = gzip_layer({"etc/motd": File(b"gzip\n")})
    plain_top = layer_tar({"etc/zstd": File(b"zstd\n")})
    top = zstandard.ZstdCompressor().compress(plain_top)
    config = image_config([base, top], diff_ids=[diff_id_of(base), diff_id_of(plain_top)])
    push_test_image(registry, "test/zstd", "v1", [base, top], config)
    image = asyncio.run(store.pull(f"{registry}/test/zstd:v1"))
    merged = store.prepare_rootfs("c1", image)
    assert (merged / "etc" / "zstd").read_bytes() == b"zstd\n"
    assert (merged / "etc" / "motd").read_bytes() == b"gzip\n"
