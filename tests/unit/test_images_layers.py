"""Layer unpacking: hostile layers are rejected and nothing lands outside the snapshot.

Each hostile layer tries one way out of the snapshot directory toward a sibling
directory ``outside`` that contains a file ``secret``. Every test then checks that
``outside`` is unchanged.
"""

import os
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.images.layers import LayerRejected, split_entry_path, unpack_layer
from support.images import File, HardLink, Symlink, diff_id_of, gzip_layer, layer_tar

LAYER = "sha256:" + "f" * 64


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_text("original")
    return directory


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    directory = tmp_path / "snapshot" / "fs"
    directory.mkdir(parents=True)
    return directory


def unpack(tmp_path: Path, blob: bytes, destination: Path, expected: str | None = None):
    path = tmp_path / "layer.blob"
    path.write_bytes(blob)
    return unpack_layer(path, destination, layer=LAYER, expected_diff_id=expected)


def assert_outside_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "original"
    assert os.stat(outside / "secret").st_nlink == 1


def test_unpack_files_and_symlinks(tmp_path: Path, snapshot: Path) -> None:
    blob = gzip_layer({"etc/motd": File(b"hi\n", mode=0o640), "bin/sh": Symlink("busybox")})
    result = unpack(tmp_path, blob, snapshot, diff_id_of(blob))
    assert (snapshot / "etc" / "motd").read_bytes() == b"hi\n"
    assert os.stat(snapshot / "etc" / "motd").st_mode & 0o777 == 0o640
    assert os.readlink(snapshot / "bin" / "sh") == "busybox"
    assert result.size == 3


def test_plain_tar_layer(tmp_path: Path, snapshot: Path) -> None:
    blob = layer_tar({"a": File(b"plain")})
    result = unpack(tmp_path, blob, snapshot)
    assert (snapshot / "a").read_bytes() == b"plain"
    assert result.diff_id == diff_id_of(blob)


def test_gzip_and_plain_share_diff_id(tmp_path: Path) -> None:
    entries = {"a": File(b"same")}
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    assert (
        unpack(tmp_path, gzip_layer(entries), first).diff_id
        == unpack(tmp_path, layer_tar(entries), second).diff_id
    )


def test_diff_id_mismatch_rejected(tmp_path: Path, snapshot: Path) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(LayerRejected, match="diff ID mismatch"):
        unpack(tmp_path, gzip_layer({"a": File(b"x")}), snapshot, wrong)


def test_not_a_tar_rejected(tmp_path: Path, snapshot: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a valid tar archive"):
        unpack(tmp_path, b"garbage" * 200, snapshot)


def test_bad_gzip_rejected(tmp_path: Path, snapshot: Path) -> None:
    # Errors from zlib and isal both read "not valid compressed data". A gzip stream that
    # ends early reads "not a valid tar archive" instead.
    with pytest.raises(LayerRejected, match="not (a valid tar archive|valid compressed data)"):
        unpack(tmp_path, b"\x1f\x8b" + b"garbage" * 20, snapshot)


def test_later_entry_replaces_earlier(tmp_path: Path, snapshot: Path) -> None:
    blob = layer_tar({"a": File(b"first"), "./a": Symlink("elsewhere")})
    unpack(tmp_path, blob, snapshot)
    assert os.readlink(snapshot / "a") == "elsewhere"


def test_dotdot_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"../../outside/secret": File(b"owned")})
    with pytest.raises(LayerRejected, match="'..' would lead outside the layer"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_absolute_path_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({str(outside / "secret"): File(b"owned")})
    with pytest.raises(LayerRejected, match="absolute paths are not allowed"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_symlink_parent_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"link": Symlink(str(outside)), "link/secret": File(b"owned")})
    with pytest.raises(LayerRejected, match="'link' is a symlink"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_relative_symlink_parent_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"a/link": Symlink("../../../outside"), "a/link/new": File(b"owned")})
    with pytest.raises(LayerRejected, match="'a/link' is a symlink"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_hard_link_outside_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"stolen": HardLink("../../outside/secret")})
    with pytest.raises(LayerRejected, match="hard link target"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_hard_link_absolute_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"stolen": HardLink(str(outside / "secret"))})
    with pytest.raises(LayerRejected, match="absolute paths are not allowed"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_hard_link_through_symlink_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"link": Symlink(str(outside)), "stolen": HardLink("link/secret")})
    with pytest.raises(LayerRejected, match="'link' is a symlink"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_hard_link_to_missing_rejected(tmp_path: Path, snapshot: Path) -> None:
    blob = gzip_layer({"copy": HardLink("absent")})
    with pytest.raises(LayerRejected, match="is not in this layer"):
        unpack(tmp_path, blob, snapshot)


def test_hard_link_inside_layer(tmp_path: Path, snapshot: Path) -> None:
    unpack(tmp_path, gzip_layer({"a/one": File(b"x"), "b/two": HardLink("a/one")}), snapshot)
    assert os.stat(snapshot / "b" / "two").st_ino == os.stat(snapshot / "a" / "one").st_ino


def test_whiteout_of_parent_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"dir/.wh..": File()})
    with pytest.raises(LayerRejected, match="must name an entry in its own directory"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_whiteout_dotdot_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"../../outside/.wh.secret": File()})
    with pytest.raises(LayerRejected, match="'..' would lead outside"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_whiteout_through_symlink_rejected(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"link": Symlink(str(outside)), "link/.wh.secret": File()})
    with pytest.raises(LayerRejected, match="'link' is a symlink"):
        unpack(tmp_path, blob, snapshot)
    assert_outside_untouched(outside)


def test_absolute_symlink_target_kept(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    # A symlink's target is only resolved inside the container, so it is stored as is.
    unpack(tmp_path, gzip_layer({"etc/secret": Symlink(str(outside / "secret"))}), snapshot)
    assert os.readlink(snapshot / "etc" / "secret") == str(outside / "secret")
    assert_outside_untouched(outside)


def test_error_names_layer_and_entry(tmp_path: Path, snapshot: Path) -> None:
    with pytest.raises(LayerRejected) as caught:
        unpack(tmp_path, gzip_layer({"../x": File()}), snapshot)
    assert LAYER in str(caught.value)
    assert "'../x'" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "parts"),
    [("a/b", ["a", "b"]), ("./a//b/", ["a", "b"]), (".", []), ("./", [])],
)
def test_split_entry_path(name: str, parts: list[str]) -> None:
    assert split_entry_path(name) == parts


@pytest.mark.parametrize("name", ["/a", "a/../b", "..", "a\0b"])
def test_split_entry_path_rejects(name: str) -> None:
    with pytest.raises(ValueError):
        split_entry_path(name)


def test_file_over_symlink_not_followed(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    # The file entry replaces the symlink; it must not write through it to its target.
    blob = gzip_layer({"secret": Symlink(str(outside / "secret")), "./secret": File(b"owned")})
    unpack(tmp_path, blob, snapshot)
    assert (snapshot / "secret").read_bytes() == b"owned"
    assert not (snapshot / "secret").is_symlink()
    assert_outside_untouched(outside)


def test_hard_link_to_symlink_links_symlink(tmp_path: Path, snapshot: Path, outside: Path) -> None:
    blob = gzip_layer({"link": Symlink(str(outside / "secret")), "copy": HardLink("link")})
    unpack(tmp_path, blob, snapshot)
    assert os.readlink(snapshot / "copy") == str(outside / "secret")
    assert_outside_untouched(outside)
