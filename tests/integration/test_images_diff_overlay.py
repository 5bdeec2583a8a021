"""Layer diffs of an overlayfs upper directory: whiteouts and opaque directories come
back in ``.wh.`` form, and the diff applied as a new layer shows the same tree."""

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.images.diff import diff_overlay_upper
from ketch.images.layers import unpack_layer
from ketch.linux.syscalls import MNT_DETACH, mount, umount
from support.images import Dir, File, layer_tar

LAYER = "sha256:" + "b" * 64
BASE = {
    "etc/": Dir(),
    "etc/old.conf": File(b"old"),
    "etc/keep": File(b"keep"),
    "var/cache/": Dir(),
    "var/cache/a": File(b"a"),
}


def unpack(tmp_path: Path, name: str, tar: bytes) -> Path:
    blob = tmp_path / f"{name}.tar"
    blob.write_bytes(tar)
    root = tmp_path / name
    root.mkdir()
    unpack_layer(blob, root, layer=LAYER)
    return root


@pytest.fixture
def container(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """Yield (lower, upper, merged) of an overlayfs mount, unmounted afterwards."""
    lower = unpack(tmp_path, "lower", layer_tar(BASE))
    upper, work, merged = (tmp_path / name for name in ("upper", "work", "merged"))
    for directory in (upper, work, merged):
        directory.mkdir()
    mount("overlay", merged, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")
    try:
        yield lower, upper, merged
    finally:
        umount(merged, MNT_DETACH)


def changed(merged: Path) -> None:
    (merged / "etc" / "old.conf").unlink()
    shutil.rmtree(merged / "var" / "cache")
    (merged / "var" / "cache").mkdir()
    (merged / "var" / "cache" / "b").write_text("b")
    (merged / "etc" / "new").write_text("new")


def tree_of(root: Path) -> dict[str, bytes | None]:
    result: dict[str, bytes | None] = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            result[str(path.relative_to(root))] = path.read_bytes()
    return result


def test_overlay_diff_whiteout_names(container: tuple[Path, Path, Path]) -> None:
    _, upper, merged = container
    changed(merged)
    out = io.BytesIO()
    diff_overlay_upper(upper, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        names = archive.getnames()
    assert "etc/.wh.old.conf" in names
    assert "var/cache/.wh..wh..opq" in names
    assert "etc/old.conf" not in names


def test_overlay_diff_applies_back(tmp_path: Path, container: tuple[Path, Path, Path]) -> None:
    lower, upper, merged = container
    changed(merged)
    out = io.BytesIO()
    diff_overlay_upper(upper, out)
    layer = unpack(tmp_path, "layer", out.getvalue())
    check = tmp_path / "check"
    check.mkdir()
    mount("overlay", check, "overlay", 0, f"lowerdir={layer}:{lower}")
    try:
        assert tree_of(check) == tree_of(merged)
    finally:
        umount(check, MNT_DETACH)


def test_overlay_diff_no_trusted_xattrs(container: tuple[Path, Path, Path]) -> None:
    _, upper, merged = container
    changed(merged)
    out = io.BytesIO()
    diff_overlay_upper(upper, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        headers = [key for member in archive for key in member.pax_headers]
    assert not [key for key in headers if key.startswith("SCHILY.xattr.trusted.")]
