"""Layer unpacking as root: ownership, device nodes, xattrs and overlayfs whiteouts."""

import os
import stat
from pathlib import Path

import pytest
import zstandard

from ketch.images.layers import unpack_layer
from ketch.linux.syscalls import MNT_DETACH, mount, umount
from support.images import (
    MTIME,
    Device,
    Dir,
    Fifo,
    File,
    OpaqueWhiteout,
    Symlink,
    Whiteout,
    gzip_layer,
    layer_tar,
)

LAYER = "sha256:" + "e" * 64


def unpack(tmp_path: Path, entries: dict) -> Path:
    tmp_path.mkdir(exist_ok=True)
    blob = tmp_path / "layer.blob"
    blob.write_bytes(gzip_layer(entries))
    destination = tmp_path / "fs"
    destination.mkdir()
    unpack_layer(blob, destination, layer=LAYER)
    return destination


def test_ownership_and_setuid_kept(tmp_path: Path) -> None:
    root = unpack(tmp_path, {"bin/tool": File(b"x", mode=0o4755, uid=1000, gid=2000)})
    info = os.stat(root / "bin" / "tool")
    assert (info.st_uid, info.st_gid) == (1000, 2000)
    assert stat.S_IMODE(info.st_mode) == 0o4755


def test_directory_metadata_applied_last(tmp_path: Path) -> None:
    root = unpack(tmp_path, {"data/": Dir(mode=0o750, uid=7, gid=8), "data/file": File(b"x")})
    info = os.stat(root / "data")
    assert stat.S_IMODE(info.st_mode) == 0o750
    assert (info.st_uid, info.st_gid) == (7, 8)
    assert int(info.st_mtime) == MTIME


def test_file_mtime_kept(tmp_path: Path) -> None:
    root = unpack(tmp_path, {"f": File(b"x", mtime=1234567890)})
    assert int(os.stat(root / "f").st_mtime) == 1234567890


def test_device_nodes_created(tmp_path: Path) -> None:
    root = unpack(tmp_path, {"dev/null": Device("char", 1, 3), "dev/loop9": Device("block", 7, 9),
                             "run/pipe": Fifo()})  # fmt: skip
    null = os.stat(root / "dev" / "null")
    assert stat.S_ISCHR(null.st_mode)
    assert (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(os.stat(root / "dev" / "loop9").st_mode)
    assert stat.S_ISFIFO(os.stat(root / "run" / "pipe").st_mode)


def test_whiteout_becomes_char_device(tmp_path: Path) -> None:
    root = unpack(tmp_path, {"etc/": Dir(), "etc/old.conf": Whiteout()})
    info = os.stat(root / "etc" / "old.conf", follow_symlinks=False)
    assert stat.S_ISCHR(info.st_mode)
    assert info.st_rdev == os.makedev(0, 0)
    assert not (root / "etc" / ".wh.old.conf").exists()


def test_opaque_whiteout_sets_xattr(tmp_path: Path) -> None:
    root = unpack(tmp_path, {"var/cache/": Dir(), "var/cache": OpaqueWhiteout(),
                             "var/cache/kept": File(b"new")})  # fmt: skip
    assert os.getxattr(root / "var" / "cache", "trusted.overlay.opaque") == b"y"
    assert (root / "var" / "cache" / "kept").read_bytes() == b"new"
    assert not (root / "var" / "cache" / ".wh..wh..opq").exists()


def test_user_xattr_kept(tmp_path: Path) -> None:
    root = unpack(tmp_path, {"f": File(b"x", xattrs={"user.origin": "layer"})})
    assert os.getxattr(root / "f", "user.origin") == b"layer"


def test_overlay_xattr_from_layer_ignored(tmp_path: Path) -> None:
    root = unpack(tmp_path, {"f": File(b"x", xattrs={"trusted.overlay.redirect": "/etc"})})
    with pytest.raises(OSError):
        os.getxattr(root / "f", "trusted.overlay.redirect")


def test_planted_symlink_next_layer_overlay(tmp_path: Path) -> None:
    # Layer one plants link -> outside; layer two writes link/secret into its own
    # directory, and the overlayfs mount shows that directory in place of the symlink.
    outside = tmp_path / "outside"
    outside.mkdir()
    lower = unpack(tmp_path / "one", {"link": Symlink(str(outside))})
    upper = unpack(tmp_path / "two", {"link/secret": File(b"owned")})
    merged = tmp_path / "merged"
    merged.mkdir()
    mount("overlay", merged, "overlay", 0, f"lowerdir={upper}:{lower}")
    try:
        assert (merged / "link" / "secret").read_bytes() == b"owned"
        assert list(outside.iterdir()) == []
    finally:
        umount(merged, MNT_DETACH)


def test_zstd_whiteouts_as_root(tmp_path: Path) -> None:
    blob = tmp_path / "layer.blob"
    plain = layer_tar({"etc/": Dir(), "etc/old": Whiteout(), "etc/new": File(b"z")})
    blob.write_bytes(zstandard.ZstdCompressor().compress(plain))
    destination = tmp_path / "fs"
    destination.mkdir()
    unpack_layer(blob, destination, layer=LAYER)
    assert stat.S_ISCHR(os.stat(destination / "etc" / "old").st_mode)
