"""Container root filesystems: overlayfs over pulled snapshots, whiteouts honoured."""

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import support.registry
from ketch.errors import InvalidArgument
from ketch.images import Image, ImageStore
from ketch.images.layers import WhiteoutForm
from support.images import (
    Dir,
    File,
    OpaqueWhiteout,
    Whiteout,
    gzip_layer,
    image_config,
    image_store,
    mounts_under,
    push_test_image,
)

# The registry fixture: a docker-registry on 127.0.0.1, stopped by PID after the test.
registry = support.registry.registry

BASE = gzip_layer({
    "etc/": Dir(),
    "etc/keep": File(b"kept\n"),
    "etc/gone": File(b"to be removed\n"),
    "data/": Dir(),
    "data/old-1": File(b"1"),
    "data/old-2": File(b"2"),
})  # fmt: skip
TOP = gzip_layer({
    "etc/gone": Whiteout(),
    "data/": Dir(),
    "data": OpaqueWhiteout(),
    "data/new": File(b"new"),
})  # fmt: skip


@pytest.fixture(params=["overlay", "copy"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path, snapshotter=request.param) as opened:
        yield opened
    assert mounts_under(tmp_path) == []


@pytest.fixture
def image(store: ImageStore, registry: str) -> Image:
    push_test_image(registry, "test/layers", "v1", [BASE, TOP])
    return asyncio.run(store.pull(f"{registry}/test/layers:v1"))


def test_whiteout_hides_lower_file(store: ImageStore, image: Image) -> None:
    merged = store.prepare_rootfs("c1", image)
    assert (merged / "etc" / "keep").read_bytes() == b"kept\n"
    assert not (merged / "etc" / "gone").exists()
    assert sorted(os.listdir(merged / "etc")) == ["keep"]


def test_opaque_directory_hides_lower_entries(store: ImageStore, image: Image) -> None:
    merged = store.prepare_rootfs("c1", image)
    assert os.listdir(merged / "data") == ["new"]


def test_lower_layer_alone_still_has_file(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/base", "v1", [BASE])
    base = asyncio.run(store.pull(f"{registry}/test/base:v1"))
    merged = store.prepare_rootfs("c1", base)
    assert (merged / "etc" / "gone").read_bytes() == b"to be removed\n"


def test_writes_go_to_upper(store: ImageStore, image: Image, tmp_path: Path) -> None:
    if store.snapshots.whiteout_form is not WhiteoutForm.OVERLAY:
        pytest.skip("only the overlay snapshotter has an upper directory")
    merged = store.prepare_rootfs("c1", image)
    (merged / "etc" / "keep").write_text("changed")
    container_dir = tmp_path / "images" / "containers" / "c1"
    assert (container_dir / "upper" / "etc" / "keep").read_text() == "changed"
    base_snapshot = store.snapshots.stat(image.diff_ids[0])
    assert base_snapshot is not None
    lower_file = store.snapshots.fs_path(base_snapshot) / "etc" / "keep"
    assert lower_file.read_bytes() == b"kept\n"


def test_containers_do_not_share_changes(store: ImageStore, image: Image) -> None:
    first = store.prepare_rootfs("c1", image)
    second = store.prepare_rootfs("c2", image)
    (first / "etc" / "keep").write_text("changed")
    assert (second / "etc" / "keep").read_bytes() == b"kept\n"


def test_prepare_is_idempotent(store: ImageStore, image: Image, tmp_path: Path) -> None:
    first = store.prepare_rootfs("c1", image)
    second = store.prepare_rootfs("c1", image)
    assert first == second
    overlay = store.snapshots.whiteout_form is WhiteoutForm.OVERLAY
    assert mounts_under(tmp_path) == ([str(first)] if overlay else [])


def test_release_unmounts_and_removes(store: ImageStore, image: Image, tmp_path: Path) -> None:
    merged = store.prepare_rootfs("c1", image)
    store.release_rootfs("c1")
    assert mounts_under(tmp_path) == []
    assert not merged.parent.exists()
    store.release_rootfs("c1")


def test_release_keeps_snapshots(store: ImageStore, image: Image) -> None:
    store.prepare_rootfs("c1", image)
    store.release_rootfs("c1")
    merged = store.prepare_rootfs("c1", image)
    assert (merged / "etc" / "keep").read_bytes() == b"kept\n"


def test_invalid_container_id(store: ImageStore, image: Image) -> None:
    with pytest.raises(InvalidArgument, match="invalid container ID '../x'"):
        store.prepare_rootfs("../x", image)


def test_image_without_layers(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/empty", "v1", [], image_config([]))
    empty = asyncio.run(store.pull(f"{registry}/test/empty:v1"))
    merged = store.prepare_rootfs("c1", empty)
    assert os.listdir(merged) == []
