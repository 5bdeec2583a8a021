"""Pulling from a real registry (Debian's docker-registry on loopback) into an ImageStore."""

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ketch.images.pull
import support.registry
from ketch.errors import Conflict, InvalidArgument, NotFound, Unavailable
from ketch.images import Image, ImageStore
from ketch.images.manifest import OCI_MANIFEST
from support.images import (
    Dir,
    File,
    Symlink,
    Whiteout,
    digest_of,
    gzip_layer,
    image_config,
    image_store,
    push_index,
    push_test_image,
)

# The registry fixture: a docker-registry on 127.0.0.1, stopped by PID after the test.
registry = support.registry.registry

BASE = gzip_layer({
    "bin/": Dir(),
    "bin/tool": File(b"#!/bin/sh\n", mode=0o755),
    "etc/": Dir(),
    "etc/motd": File(b"base\n"),
    "etc/old": File(b"old\n"),
})  # fmt: skip
TOP = gzip_layer({"etc/motd": File(b"top\n"), "etc/old": Whiteout(), "bin/sh": Symlink("tool")})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path) as opened:
        yield opened


def pull(store: ImageStore, reference: str) -> tuple[Image, list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    image = asyncio.run(store.pull(reference, messages.append))
    return image, messages


def statuses(messages: list[dict[str, Any]]) -> list[str]:
    return [message["status"] for message in messages]


def stored_files(store: ImageStore) -> dict[str, list[str]]:
    return {
        "blobs": sorted(p.name for p in store.content.blob_dir.iterdir()),
        "ingest": sorted(p.name for p in store.content.ingest_dir.iterdir()),
        "snapshots": sorted(p.name for p in store.snapshots.directory.iterdir()),
    }


def test_pull_records_image(store: ImageStore, registry: str) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE, TOP])
    image, _ = pull(store, f"{registry}/test/app:v1")
    assert image.id == pushed.config_digest
    assert image.repo_tags == [f"{registry}/test/app:v1"]
    assert image.repo_digests == [f"{registry}/test/app@{pushed.manifest_digest}"]
    assert image.diff_ids == pushed.diff_ids
    assert image.config["Cmd"] == ["sh"]
    assert image.architecture == "amd64"
    assert image.os == "linux"
    assert image.created == "2024-01-02T03:04:05Z"
    assert image.size == len(b"#!/bin/sh\n") + len(b"base\n") + len(b"old\n") + len(b"top\n")


def test_get_by_name_id_and_prefix(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    image, _ = pull(store, f"{registry}/test/app:v1")
    assert store.get(f"{registry}/test/app:v1").id == image.id
    assert store.get(image.id).id == image.id
    assert store.get(image.id.removeprefix("sha256:")[:12]).id == image.id
    assert store.get(image.id[:19]).id == image.id
    assert store.get(image.repo_digests[0]).id == image.id
    assert [listed.id for listed in store.list()] == [image.id]


def test_get_unknown_image(store: ImageStore) -> None:
    with pytest.raises(NotFound, match=r"^No such image: busybox:latest$"):
        store.get("busybox")


def test_get_invalid_reference(store: ImageStore) -> None:
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        store.get("Not:A:Reference")


def test_pull_progress_messages(store: ImageStore, registry: str) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE, TOP])
    _, messages = pull(store, f"{registry}/test/app:v1")
    assert messages[0] == {"status": "Pulling from test/app", "id": "v1"}
    layer_id = digest_of(BASE).removeprefix("sha256:")[:12]
    layer_statuses = [m["status"] for m in messages if m.get("id") == layer_id]
    assert layer_statuses[0] == "Pulling fs layer"
    assert "Download complete" in layer_statuses
    assert layer_statuses[-1] == "Pull complete"
    assert messages[-2] == {"status": f"Digest: {pushed.manifest_digest}"}
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {registry}/test/app:v1"}


def test_pull_again_is_up_to_date(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE, TOP])
    pull(store, f"{registry}/test/app:v1")
    _, messages = pull(store, f"{registry}/test/app:v1")
    assert statuses(messages).count("Already exists") == 2
    assert "Downloading" not in statuses(messages)
    assert messages[-1]["status"] == f"Status: Image is up to date for {registry}/test/app:v1"


def test_pull_by_digest(store: ImageStore, registry: str) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE])
    image, messages = pull(store, f"{registry}/test/app@{pushed.manifest_digest}")
    assert image.id == pushed.config_digest
    assert image.repo_tags == []
    assert messages[0] == {"status": "Pulling from test/app", "id": pushed.manifest_digest}


def test_pull_shares_layer_snapshots(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/one", "v1", [BASE])
    push_test_image(registry, "test/two", "v1", [BASE, TOP])
    pull(store, f"{registry}/test/one:v1")
    _, messages = pull(store, f"{registry}/test/two:v1")
    assert statuses(messages).count("Already exists") == 1
    assert len(store.snapshots.list()) == 2


def test_pull_oci_manifest(store: ImageStore, registry: str) -> None:
    pushed = push_test_image(registry, "test/oci", "v1", [BASE], manifest_media_type=OCI_MANIFEST)
    image, _ = pull(store, f"{registry}/test/oci:v1")
    assert image.id == pushed.config_digest


def test_pull_index_selects_amd64(store: ImageStore, registry: str) -> None:
    arm = push_test_image(registry, "test/multi", "arm", [TOP],
                          image_config([TOP], architecture="arm64"))  # fmt: skip
    amd = push_test_image(registry, "test/multi", "amd", [BASE])
    index_digest = push_index(
        registry, "test/multi", "latest", {"linux/arm64/v8": arm, "linux/amd64": amd}
    )
    image, messages = pull(store, f"{registry}/test/multi")
    assert image.id == amd.config_digest
    assert image.repo_digests == [f"{registry}/test/multi@{index_digest}"]
    assert messages[-2] == {"status": f"Digest: {index_digest}"}


def test_pull_index_without_platform(store: ImageStore, registry: str) -> None:
    arm = push_test_image(registry, "test/armonly", "arm", [TOP],
                          image_config([TOP], architecture="arm64"))  # fmt: skip
    push_index(registry, "test/armonly", "latest", {"linux/arm64": arm}, oci=False)
    with pytest.raises(NotFound, match="no matching manifest for linux/amd64"):
        pull(store, f"{registry}/test/armonly")


def test_pull_unknown_tag(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    with pytest.raises(NotFound, match=f"manifest for {registry}/test/app:nope not found"):
        pull(store, f"{registry}/test/app:nope")


def test_pull_unknown_repository(store: ImageStore, registry: str) -> None:
    with pytest.raises(NotFound, match="no-such-image-here"):
        pull(store, f"{registry}/no-such-image-here")


def test_pull_unreachable_registry(store: ImageStore) -> None:
    with pytest.raises(Unavailable, match=r"registry 127\.0\.0\.1:1 is unreachable"):
        pull(store, "127.0.0.1:1/nothing/here")
    assert store.list() == []


def test_pull_invalid_reference(store: ImageStore) -> None:
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        pull(store, "Not:A:Reference")


def test_mirror_serves_docker_io(tmp_path: Path, registry: str) -> None:
    push_test_image(registry, "library/busybox", "latest", [BASE])
    with image_store(tmp_path, mirrors=[f"http://{registry}"]) as store:
        image, messages = pull(store, "busybox")
        assert image.repo_tags == ["busybox:latest"]
        assert messages[0] == {"status": "Pulling from library/busybox", "id": "latest"}
        assert store.get("docker.io/library/busybox:latest").id == image.id


def test_mirror_miss_is_not_found(tmp_path: Path, registry: str) -> None:
    # With a mirror configured, a miss must not fall back to Docker Hub.
    with image_store(tmp_path, mirrors=[f"http://{registry}"]) as store:
        with pytest.raises(NotFound, match="no-such-image-here") as raised:
            pull(store, "no-such-image-here")
    assert f"docker.io mirrors http://{registry}" in str(raised.value)


def test_mirrors_tried_in_order(tmp_path: Path, registry: str) -> None:
    push_test_image(registry, "library/busybox", "latest", [BASE])
    mirrors = ["http://127.0.0.1:1", f"http://{registry}"]
    with image_store(tmp_path, mirrors=mirrors) as store:
        image, _ = pull(store, "busybox")
        assert image.repo_tags == ["busybox:latest"]


def test_diff_id_mismatch_leaves_nothing(store: ImageStore, registry: str) -> None:
    config = image_config([BASE], diff_ids=["sha256:" + "0" * 64])
    push_test_image(registry, "test/bad", "v1", [BASE], config)
    with pytest.raises(InvalidArgument, match="diff ID mismatch"):
        pull(store, f"{registry}/test/bad:v1")
    assert store.list() == []
    assert store.snapshots.list() == []
    assert stored_files(store) == {"blobs": [], "ingest": [], "snapshots": []}


def test_hostile_layer_leaves_nothing(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/evil", "v1", [BASE, gzip_layer({"../escape": File(b"x")})])
    with pytest.raises(InvalidArgument, match="would lead outside the layer"):
        pull(store, f"{registry}/test/evil:v1")
    assert store.list() == []
    assert stored_files(store) == {"blobs": [], "ingest": [], "snapshots": []}
    assert not (store.root.parent / "escape").exists()


def test_failed_pull_keeps_shared_layer(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/one", "v1", [BASE])
    push_test_image(registry, "test/evil", "v1", [BASE, gzip_layer({"/abs": File(b"x")})])
    one, _ = pull(store, f"{registry}/test/one:v1")
    with pytest.raises(InvalidArgument, match="absolute paths are not allowed"):
        pull(store, f"{registry}/test/evil:v1")
    assert [image.id for image in store.list()] == [one.id]
    assert len(store.snapshots.list()) == 1
    assert len(stored_files(store)["blobs"]) == len(store.metadata.blobs(one.id))


def test_tampered_blob_rejected(tmp_path: Path) -> None:
    running = support.registry.start_registry(tmp_path / "registry")
    try:
        pushed = push_test_image(running.address, "test/app", "v1", [BASE])
        blob_hex = digest_of(BASE).removeprefix("sha256:")
        data = tmp_path / "registry" / "data" / "docker" / "registry" / "v2" / "blobs"
        stored = data / "sha256" / blob_hex[:2] / blob_hex / "data"
        tampered = bytearray(stored.read_bytes())
        tampered[-1] ^= 0xFF
        stored.write_bytes(bytes(tampered))
        with image_store(tmp_path / "store") as store:
            with pytest.raises(InvalidArgument, match="filesystem layer verification failed"):
                pull(store, f"{running.address}/test/app:v1")
            assert store.list() == []
            assert stored_files(store) == {"blobs": [], "ingest": [], "snapshots": []}
        assert pushed.config_digest
    finally:
        running.stop()


def test_remove_by_tag_deletes_everything(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE, TOP])
    image, _ = pull(store, f"{registry}/test/app:v1")
    result = store.remove(f"{registry}/test/app:v1")
    assert result == [
        {"Untagged": f"{registry}/test/app:v1"},
        {"Untagged": image.repo_digests[0]},
        {"Deleted": image.id},
    ]
    assert store.list() == []
    assert stored_files(store) == {"blobs": [], "ingest": [], "snapshots": []}


def test_remove_by_id_prefix(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    image, _ = pull(store, f"{registry}/test/app:v1")
    result = store.remove(image.id.removeprefix("sha256:")[:12])
    assert result == [
        {"Untagged": f"{registry}/test/app:v1"},
        {"Untagged": image.repo_digests[0]},
        {"Deleted": image.id},
    ]
    assert store.list() == []


def test_remove_tag_keeps_other_tags(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    push_test_image(registry, "test/app", "v2", [BASE])
    pull(store, f"{registry}/test/app:v1")
    image, _ = pull(store, f"{registry}/test/app:v2")
    assert store.remove(f"{registry}/test/app:v1") == [{"Untagged": f"{registry}/test/app:v1"}]
    assert store.get(image.id).repo_tags == [f"{registry}/test/app:v2"]


def test_remove_keeps_shared_layer(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/one", "v1", [BASE])
    push_test_image(registry, "test/two", "v1", [BASE, TOP])
    one, _ = pull(store, f"{registry}/test/one:v1")
    pull(store, f"{registry}/test/two:v1")
    store.remove(f"{registry}/test/two:v1")
    assert [image.id for image in store.list()] == [one.id]
    assert len(store.snapshots.list()) == 1


def test_remove_image_in_use(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    image, _ = pull(store, f"{registry}/test/app:v1")
    store.prepare_rootfs("user1", image)
    with pytest.raises(Conflict, match="container user1 is using"):
        store.remove(f"{registry}/test/app:v1")
    with pytest.raises(Conflict, match="being used by container user1"):
        store.remove(image.id)


def test_store_reopens_with_images(tmp_path: Path, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    with image_store(tmp_path) as store:
        image, _ = pull(store, f"{registry}/test/app:v1")
    with image_store(tmp_path) as reopened:
        assert reopened.get(f"{registry}/test/app:v1").id == image.id
        assert len(reopened.snapshots.list()) == 1


def test_blob_files_are_read_only_to_others(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    pull(store, f"{registry}/test/app:v1")
    for blob in store.content.blob_dir.iterdir():
        assert os.stat(blob).st_mode & 0o022 == 0


def test_concurrent_pulls_share_work(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE, TOP])

    async def pull_twice() -> list[Image]:
        reference = f"{registry}/test/app:v1"
        return list(await asyncio.gather(store.pull(reference), store.pull(reference)))

    first, second = asyncio.run(pull_twice())
    assert first.id == second.id
    assert len(store.snapshots.list()) == 2
    assert stored_files(store)["ingest"] == []
    assert len(store.list()) == 1


def test_moved_tag_leaves_old_image(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    old, _ = pull(store, f"{registry}/test/app:v1")
    push_test_image(registry, "test/app", "v1", [BASE, TOP])
    new, messages = pull(store, f"{registry}/test/app:v1")
    assert messages[-1]["status"].startswith("Status: Downloaded newer image")
    assert store.get(f"{registry}/test/app:v1").id == new.id
    assert store.get(old.id).repo_tags == []
    assert len(store.get(old.id).repo_digests) == 1


def test_pull_stream_overflow_falls_back(
    store: ImageStore, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A feed that holds 1 byte breaks off at once, so each layer unpacks from its blob.
    monkeypatch.setattr(ketch.images.pull, "MAX_STREAM_BUFFER", 1)
    pushed = push_test_image(registry, "test/app", "v1", [BASE, TOP])
    image, _ = pull(store, f"{registry}/test/app:v1")
    assert image.diff_ids == pushed.diff_ids
    assert len(store.snapshots.list()) == 2
    assert stored_files(store)["ingest"] == []


def test_pull_streamed_layers_match(store: ImageStore, registry: str) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE, TOP])
    image, _ = pull(store, f"{registry}/test/app:v1")
    assert image.diff_ids == pushed.diff_ids
    assert [snapshot.state for snapshot in store.snapshots.list()] == ["committed"] * 2
    top = store.snapshots.stat(store.snapshots.list()[-1].chain_id or "")
    assert top is not None
    assert (store.snapshots.fs_path(top) / "etc" / "motd").read_bytes() == b"top\n"
