"""Layer unpacking in APPLY form: layers unpacked one after another into one directory,
as the copying snapshotter does, with whiteouts deleting what lower layers left.

The hostile cases plant something in one layer and use it in the next; the sibling
directory ``outside`` must stay unchanged.
"""

import os
from pathlib import Path

import pytest

from ketch.images.layers import LayerRejected, WhiteoutForm, unpack_layer
from support.images import File, HardLink, OpaqueWhiteout, Symlink, Whiteout, layer_tar

LAYER = "sha256:" + "a" * 64


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_text("original")
    return directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "fs"
    directory.mkdir()
    return directory


def apply(tmp_path: Path, root: Path, *layers: dict) -> None:
    for entries in layers:
        blob = tmp_path / "layer.blob"
        blob.write_bytes(layer_tar(entries))
        unpack_layer(blob, root, layer=LAYER, whiteouts=WhiteoutForm.APPLY)


def assert_outside_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "original"


def test_whiteout_deletes_lower_file(tmp_path: Path, root: Path) -> None:
    apply(tmp_path, root, {"etc/a": File(b"1"), "etc/b": File(b"2")}, {"etc/a": Whiteout()})
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["b"]


def test_whiteout_deletes_lower_directory(tmp_path: Path, root: Path) -> None:
    apply(tmp_path, root, {"var/lib/x": File(b"1")}, {"var/lib": Whiteout()})
    assert list((root / "var").iterdir()) == []


def test_opaque_clears_lower_children(tmp_path: Path, root: Path) -> None:
    lower = {"cache/old": File(b"1"), "cache/sub/deep": File(b"2")}
    upper = {"cache/new": File(b"3"), "cache": OpaqueWhiteout()}
    apply(tmp_path, root, lower, upper)
    assert sorted(p.name for p in (root / "cache").iterdir()) == ["new"]


def test_later_file_replaces_lower_file(tmp_path: Path, root: Path) -> None:
    apply(tmp_path, root, {"a": File(b"old")}, {"a": File(b"new")})
    assert (root / "a").read_bytes() == b"new"


def test_directories_merge(tmp_path: Path, root: Path) -> None:
    apply(tmp_path, root, {"d/one": File(b"1")}, {"d/two": File(b"2")})
    assert sorted(p.name for p in (root / "d").iterdir()) == ["one", "two"]


def test_planted_symlink_replaced(tmp_path: Path, root: Path, outside: Path) -> None:
    # Layer one plants link -> outside; layer two writes link/secret. Overlayfs shows
    # layer two's directory in place of the symlink, and so does APPLY form.
    apply(tmp_path, root, {"link": Symlink(str(outside))}, {"link/secret": File(b"owned")})
    assert not (root / "link").is_symlink()
    assert (root / "link" / "secret").read_bytes() == b"owned"
    assert_outside_untouched(outside)


def test_planted_relative_symlink_replaced(tmp_path: Path, root: Path, outside: Path) -> None:
    lower = {"a/link": Symlink("../../outside")}
    apply(tmp_path, root, lower, {"a/link/new": File(b"owned")})
    assert (root / "a" / "link" / "new").read_bytes() == b"owned"
    assert_outside_untouched(outside)


def test_same_layer_symlink_rejected(tmp_path: Path, root: Path, outside: Path) -> None:
    layer = {"link": Symlink(str(outside)), "link/secret": File(b"owned")}
    with pytest.raises(LayerRejected, match="'link' is a symlink"):
        apply(tmp_path, root, layer)
    assert_outside_untouched(outside)


def test_planted_symlink_whiteout_stays_inside(tmp_path: Path, root: Path, outside: Path) -> None:
    apply(tmp_path, root, {"link": Symlink(str(outside))}, {"link/secret": Whiteout()})
    assert_outside_untouched(outside)


def test_hard_link_to_lower_rejected(tmp_path: Path, root: Path) -> None:
    with pytest.raises(LayerRejected, match="is not in this layer"):
        apply(tmp_path, root, {"a": File(b"1")}, {"b": HardLink("a")})


def test_hard_link_through_planted_symlink_rejected(
    tmp_path: Path, root: Path, outside: Path
) -> None:
    with pytest.raises(LayerRejected, match="hard link target 'link/secret'"):
        apply(tmp_path, root, {"link": Symlink(str(outside))}, {"stolen": HardLink("link/secret")})
    assert_outside_untouched(outside)


def test_hard_link_within_layer(tmp_path: Path, root: Path) -> None:
    apply(tmp_path, root, {"a": File(b"1"), "b": HardLink("a")})
    assert os.stat(root / "a").st_ino == os.stat(root / "b").st_ino
