"""A container's changes as a layer (for commit), through the image store, with both
snapshotters."""

import asyncio
import io
import tarfile
from pathlib import Path

import pytest

from ketch.errors import NotFound
from ketch.images.snapshots import SNAPSHOTTER_NAMES
from support.images import Dir, File, image_config, image_store, layer_tar

BASE = layer_tar({"etc/": Dir(), "etc/keep": File(b"keep"), "etc/gone": File(b"gone")})


def archive_of(layer: bytes, config: bytes) -> bytes:
    buffer = io.BytesIO()
    files = {"manifest.json": b'[{"Config": "c.json", "RepoTags": ["base:1"], '
             b'"Layers": ["l.tar"]}]', "c.json": config, "l.tar": layer}  # fmt: skip
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("snapshotter", SNAPSHOTTER_NAMES)
def test_diff_rootfs_lists_changes(tmp_path: Path, snapshotter: str) -> None:
    with image_store(tmp_path, snapshotter=snapshotter) as store:
        asyncio.run(store.load(io.BytesIO(archive_of(BASE, image_config([BASE])))))
        merged = store.prepare_rootfs("c1", store.get("base:1"))
        (merged / "etc" / "gone").unlink()
        (merged / "etc" / "new").write_text("new")
        out = io.BytesIO()
        result = store.diff_rootfs("c1", out)
        with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
            names = sorted(archive.getnames())
        assert names == ["etc", "etc/.wh.gone", "etc/new"]
        assert result.size == len(out.getvalue())


def test_diff_rootfs_unknown_container(tmp_path: Path) -> None:
    with image_store(tmp_path) as store:
        with pytest.raises(NotFound, match="container c9 has no rootfs"):
            store.diff_rootfs("c9", io.BytesIO())
