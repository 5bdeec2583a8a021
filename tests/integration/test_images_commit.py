"""Commit through the image store: a container's changes as a new image on its image."""

import asyncio
import io
import json
import tarfile
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.images.commit import CommitRequest, commit_image
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


def changed_layer(store: object, tmp_path: Path) -> Path:
    """Change the rootfs of container c1 on base:1 and write its diff to a file."""
    merged = store.prepare_rootfs("c1", store.get("base:1"))  # type: ignore[attr-defined]
    (merged / "etc" / "gone").unlink()
    (merged / "etc" / "new").write_text("new")
    layer = tmp_path / "diff.tar"
    with open(layer, "wb") as out:
        store.diff_rootfs("c1", out)  # type: ignore[attr-defined]
    return layer


@pytest.mark.parametrize("snapshotter", SNAPSHOTTER_NAMES)
def test_commit_adds_layer(tmp_path: Path, snapshotter: str) -> None:
    with image_store(tmp_path / "store", snapshotter=snapshotter) as store:
        asyncio.run(store.load(io.BytesIO(archive_of(BASE, image_config([BASE])))))
        base = store.get("base:1")
        request = CommitRequest("c1", {"Cmd": ["cat"]}, comment="made", reference="new:2")
        image_id = asyncio.run(
            commit_image(store, base.id, changed_layer(store, tmp_path), request)
        )

        image = store.get("new:2")
        assert image.id == image_id
        assert image.diff_ids[:-1] == base.diff_ids
        assert len(image.diff_ids) == len(base.diff_ids) + 1
        assert image.config == {"Cmd": ["cat"]}
        config = json.loads(store.content.read(image_id))
        assert config["history"][-1]["comment"] == "made"

        merged = store.prepare_rootfs("c2", image)
        assert sorted(path.name for path in (merged / "etc").iterdir()) == ["keep", "new"]


def test_commit_rejects_digest(tmp_path: Path) -> None:
    with image_store(tmp_path / "store") as store:
        asyncio.run(store.load(io.BytesIO(archive_of(BASE, image_config([BASE])))))
        request = CommitRequest("c1", {}, reference="new@sha256:" + "0" * 64)
        with pytest.raises(InvalidArgument, match="expected a tag, not a digest"):
            asyncio.run(commit_image(store, store.get("base:1").id, tmp_path / "x.tar", request))
