"""The snapshotter conformance suite: every test runs against both snapshotters, which
must give containers the same root filesystem from the same layers."""

import errno
import io
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.errors import SystemFailure
from ketch.images import overlay
from ketch.images.layers import unpack_layer
from ketch.images.snapshots import SNAPSHOTTER_NAMES, Snapshotter, chain_ids, open_snapshotter
from ketch.linux.syscalls import MNT_DETACH, umount
from support.images import (
    Dir,
    File,
    OpaqueWhiteout,
    Symlink,
    Whiteout,
    diff_id_of,
    layer_tar,
    mounts_under,
)

BASE = {
    "etc/": Dir(),
    "etc/keep": File(b"kept\n"),
    "etc/gone": File(b"to be removed\n"),
    "data/": Dir(),
    "data/old": File(b"old"),
    "bin/": Dir(),
    "bin/busybox": File(b"\x7fELF", mode=0o755),
    "bin/sh": Symlink("busybox"),
}
TOP = {
    "etc/gone": Whiteout(),
    "data/": Dir(),
    "data": OpaqueWhiteout(),
    "data/new": File(b"new"),
}


class Layers:
    """A snapshotter with a helper that unpacks layers on top of each other."""

    def __init__(self, snapshots: Snapshotter, scratch: Path) -> None:
        self.snapshots = snapshots
        self.scratch = scratch
        self.diff_ids: list[str] = []

    def add(self, entries: dict | bytes) -> str:
        tar = entries if isinstance(entries, bytes) else layer_tar(entries)
        blob = self.scratch / "layer.tar"
        blob.write_bytes(tar)
        parent = chain_ids(self.diff_ids)[-1] if self.diff_ids else None
        self.diff_ids.append(diff_id_of(tar))
        chain_id = chain_ids(self.diff_ids)[-1]
        key = f"extract-{len(self.diff_ids)}"
        path = self.snapshots.prepare(key, parent)
        unpacked = unpack_layer(
            blob, path, layer=self.diff_ids[-1], whiteouts=self.snapshots.whiteout_form
        )
        self.snapshots.commit(key, chain_id, unpacked.diff_id, unpacked.size)
        return chain_id


@pytest.fixture(params=SNAPSHOTTER_NAMES)
def layers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Layers]:
    root = tmp_path / "root"
    db = sqlite3.connect(":memory:")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    try:
        yield Layers(open_snapshotter(request.param, root, db), scratch)
    finally:
        for target in sorted(mounts_under(tmp_path), key=len, reverse=True):
            umount(target, MNT_DETACH)
        db.close()


@pytest.fixture
def container_dir(tmp_path: Path) -> Path:
    return tmp_path / "containers" / "c1"


def tree_of(root: Path) -> dict[str, object]:
    """Return every path below ``root`` with its file content or symlink target."""
    result: dict[str, object] = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                result[key] = ("symlink", os.readlink(path))
            elif path.is_dir():
                result[key] = "dir"
            else:
                result[key] = path.read_bytes()
    return result


def test_whiteout_hides_lower_file(layers: Layers, container_dir: Path) -> None:
    layers.add(BASE)
    top = layers.add(TOP)
    merged = layers.snapshots.mount_container(container_dir, top)
    assert sorted(os.listdir(merged / "etc")) == ["keep"]


def test_opaque_hides_lower_entries(layers: Layers, container_dir: Path) -> None:
    layers.add(BASE)
    merged = layers.snapshots.mount_container(container_dir, layers.add(TOP))
    assert os.listdir(merged / "data") == ["new"]


def test_lower_chain_unchanged(layers: Layers, container_dir: Path) -> None:
    bottom = layers.add(BASE)
    layers.add(TOP)
    merged = layers.snapshots.mount_container(container_dir, bottom)
    assert (merged / "etc" / "gone").read_bytes() == b"to be removed\n"


def test_planted_symlink_replaced(layers: Layers, container_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layers.add({"link": Symlink(str(outside))})
    merged = layers.snapshots.mount_container(container_dir, layers.add({"link/x": File(b"x")}))
    assert (merged / "link" / "x").read_bytes() == b"x"
    assert not (merged / "link").is_symlink()
    assert list(outside.iterdir()) == []


def test_container_writes_stay_private(layers: Layers, tmp_path: Path) -> None:
    top = layers.add(BASE)
    first = layers.snapshots.mount_container(tmp_path / "c1", top)
    second = layers.snapshots.mount_container(tmp_path / "c2", top)
    (first / "etc" / "keep").write_text("changed")
    assert (second / "etc" / "keep").read_bytes() == b"kept\n"
    snapshot = layers.snapshots.stat(top)
    assert snapshot is not None
    assert (layers.snapshots.fs_path(snapshot) / "etc" / "keep").read_bytes() == b"kept\n"


def test_mount_container_again_same(layers: Layers, container_dir: Path) -> None:
    top = layers.add(BASE)
    first = layers.snapshots.mount_container(container_dir, top)
    (first / "marker").write_text("m")
    second = layers.snapshots.mount_container(container_dir, top)
    assert (second / "marker").read_text() == "m"


def test_container_without_layers(layers: Layers, container_dir: Path) -> None:
    merged = layers.snapshots.mount_container(container_dir, None)
    assert os.listdir(merged) == []


def test_unmount_container_then_delete(layers: Layers, container_dir: Path) -> None:
    merged = layers.snapshots.mount_container(container_dir, layers.add(BASE))
    layers.snapshots.unmount_container(container_dir)
    assert not os.path.ismount(merged)
    shutil.rmtree(container_dir)
    assert layers.snapshots.lowerdirs(chain_ids(layers.diff_ids)[-1])[0].exists()


def test_view_shows_merged_tree(layers: Layers, tmp_path: Path) -> None:
    layers.add(BASE)
    target = tmp_path / "view"
    target.mkdir()
    layers.snapshots.view(layers.add(TOP), target)
    try:
        assert sorted(os.listdir(target / "etc")) == ["keep"]
        assert os.listdir(target / "data") == ["new"]
    finally:
        layers.snapshots.unmount(target)


def test_view_is_read_only(layers: Layers, tmp_path: Path) -> None:
    target = tmp_path / "view"
    target.mkdir()
    layers.snapshots.view(layers.add(BASE), target)
    try:
        with pytest.raises(OSError) as caught:
            (target / "etc" / "new").write_text("x")
        assert caught.value.errno == errno.EROFS
    finally:
        layers.snapshots.unmount(target)


def test_view_single_layer(layers: Layers, tmp_path: Path) -> None:
    target = tmp_path / "view"
    target.mkdir()
    layers.snapshots.view(layers.add(BASE), target)
    try:
        assert (target / "etc" / "keep").read_bytes() == b"kept\n"
    finally:
        layers.snapshots.unmount(target)
    assert not os.path.ismount(target)


def test_diff_container_round_trip(layers: Layers, container_dir: Path, tmp_path: Path) -> None:
    layers.add(BASE)
    top = layers.add(TOP)
    merged = layers.snapshots.mount_container(container_dir, top)
    (merged / "etc" / "keep").unlink()
    (merged / "srv").mkdir()
    (merged / "srv" / "app").write_text("app")
    shutil.rmtree(merged / "data")
    (merged / "bin" / "sh").unlink()
    (merged / "bin" / "sh").symlink_to("dash")
    out = io.BytesIO()
    layers.snapshots.diff_container(container_dir, top, out)
    committed = layers.add(out.getvalue())
    target = tmp_path / "view"
    target.mkdir()
    layers.snapshots.view(committed, target)
    try:
        assert tree_of(target) == tree_of(merged)
    finally:
        layers.snapshots.unmount(target)


def test_deep_chain_long_root(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # 40 layers under a 400-byte data root need about 17 KiB of lowerdir paths, four times
    # what mount(2) accepts. The ',' would also split the overlayfs options.
    for kind in SNAPSHOTTER_NAMES:
        root = tmp_path / kind / ("d" * 200) / ("e,x" + "e" * 197)
        db = sqlite3.connect(":memory:")
        layers = Layers(open_snapshotter(kind, root, db), tmp_path)
        for index in range(40):
            layers.add({f"layer{index}": File(str(index).encode())})
        merged = layers.snapshots.mount_container(root / "c1", chain_ids(layers.diff_ids)[-1])
        try:
            assert len(os.listdir(merged)) == 40
            assert (merged / "layer0").read_bytes() == b"0"
        finally:
            layers.snapshots.unmount_container(root / "c1")
            db.close()


def overlay_layers(tmp_path: Path, count: int) -> tuple[Layers, sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    layers = Layers(open_snapshotter("overlay", tmp_path / ("r" * 200), db), tmp_path)
    for index in range(count):
        layers.add({f"f{index}": File()})
    return layers, db


def test_overlay_260_layers_mount(tmp_path: Path) -> None:
    # Past one page of options even with /proc/self/fd names; lowerdir+ takes them all.
    layers, db = overlay_layers(tmp_path, 260)
    try:
        merged = layers.snapshots.mount_container(tmp_path / "c1", chain_ids(layers.diff_ids)[-1])
        assert len(os.listdir(merged)) == 260
    finally:
        layers.snapshots.unmount_container(tmp_path / "c1")
        db.close()


def test_overlay_fd_names_without_lowerdir_plus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on kernels before 6.8: the layers are named /proc/self/fd/N in mount(2) options.
    monkeypatch.setattr(overlay, "_mount_layer_by_layer", lambda *arguments: False)
    layers, db = overlay_layers(tmp_path, 40)
    try:
        merged = layers.snapshots.mount_container(tmp_path / "c1", chain_ids(layers.diff_ids)[-1])
        assert len(os.listdir(merged)) == 40
    finally:
        layers.snapshots.unmount_container(tmp_path / "c1")
        db.close()


def test_overlay_too_many_fd_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlay, "_mount_layer_by_layer", lambda *arguments: False)
    layers, db = overlay_layers(tmp_path, 260)
    with pytest.raises(SystemFailure, match="260 layers make .* bytes of mount options"):
        layers.snapshots.mount_container(tmp_path / "c1", chain_ids(layers.diff_ids)[-1])
    assert mounts_under(tmp_path) == []
    db.close()


def test_overlay_container_no_redirects(tmp_path: Path) -> None:
    # With redirect_dir off, renaming a lower directory fails with EXDEV (tools then copy
    # it), so the upper directory never holds a redirect that its diff would miss.
    db = sqlite3.connect(":memory:")
    layers = Layers(open_snapshotter("overlay", tmp_path / "root", db), tmp_path)
    top = layers.add({"d/": Dir(), "d/x": File(b"x")})
    try:
        merged = layers.snapshots.mount_container(tmp_path / "c1", top)
        with pytest.raises(OSError) as caught:
            os.rename(merged / "d", merged / "e")
        assert caught.value.errno == errno.EXDEV
    finally:
        layers.snapshots.unmount_container(tmp_path / "c1")
        db.close()
