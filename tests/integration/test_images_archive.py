"""Archives: docker save tarballs (legacy and OCI forms) and OCI layouts load, ketch's
save output loads back and reads in skopeo, and rootfs tarballs import as images."""

import asyncio
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.images import ImageStore
from ketch.images.layers import UnpackLimits
from support.images import (
    Dir,
    File,
    Symlink,
    Whiteout,
    digest_of,
    gzip_layer,
    image_config,
    image_store,
    layer_tar,
    mounts_under,
)

BASE = layer_tar({"etc/": Dir(), "etc/motd": File(b"base\n"), "etc/old": File(b"old")})
TOP = layer_tar({"etc/old": Whiteout(), "app/": Dir(), "app/run": File(b"#!/bin/sh\n", 0o755)})
CONFIG = image_config([BASE, TOP], cmd=["/app/run"])
IMAGE_ID = digest_of(CONFIG)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path / "one") as opened:
        yield opened
    assert mounts_under(tmp_path) == []


@pytest.fixture
def other_store(tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path / "two") as opened:
        yield opened


def tar_of(files: dict[str, bytes | str]) -> bytes:
    """Return a tar of ``files``; a str value makes a symlink to that target."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def legacy_archive() -> bytes:
    # docker 20.10's form: one directory per layer; a repeated layer is a symlink.
    manifest = [
        {"Config": f"{IMAGE_ID[7:]}.json", "RepoTags": ["example/app:v1"],
         "Layers": ["aaa/layer.tar", "bbb/layer.tar"]},
        {"Config": f"{digest_of(image_config([BASE]))[7:]}.json", "RepoTags": ["example/base:v1"],
         "Layers": ["ccc/layer.tar"]},
    ]  # fmt: skip
    return tar_of({
        "aaa/layer.tar": BASE, "aaa/VERSION": b"1.0", "bbb/layer.tar": TOP,
        "ccc/layer.tar": "../aaa/layer.tar",
        f"{IMAGE_ID[7:]}.json": CONFIG,
        f"{digest_of(image_config([BASE]))[7:]}.json": image_config([BASE]),
        "manifest.json": json.dumps(manifest).encode(),
        "repositories": b'{"example/app": {"v1": "bbb"}}',
    })  # fmt: skip


def oci_files(layers: list[bytes], config: bytes, name: str | None) -> dict[str, bytes | str]:
    """Return the files of an OCI layout with one image (gzip layers allowed)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_of(layer), "size": len(layer)} for layer in layers],
    }  # fmt: skip
    manifest_bytes = json.dumps(manifest).encode()
    entry = {"mediaType": manifest["mediaType"], "digest": digest_of(manifest_bytes),
             "size": len(manifest_bytes)}  # fmt: skip
    if name:
        entry["annotations"] = {"org.opencontainers.image.ref.name": name}
    files: dict[str, bytes | str] = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode(),
        f"blobs/sha256/{digest_of(manifest_bytes)[7:]}": manifest_bytes,
        f"blobs/sha256/{digest_of(config)[7:]}": config,
    }
    for layer in layers:
        files[f"blobs/sha256/{digest_of(layer)[7:]}"] = layer
    return files


def load(store: ImageStore, data: bytes | Path) -> list:
    source = data if isinstance(data, Path) else io.BytesIO(data)
    return asyncio.run(store.load(source))


def rootfs_files(store: ImageStore, name: str) -> list[str]:
    merged = store.prepare_rootfs("check", store.get(name))
    try:
        return sorted(str(path.relative_to(merged)) for path in merged.rglob("*"))
    finally:
        store.release_rootfs("check")


def test_legacy_archive_loads(store: ImageStore) -> None:
    loaded = load(store, legacy_archive())
    assert [image.repo_tags for image in loaded] == [["example/app:v1"], ["example/base:v1"]]
    assert store.get("example/app:v1").id == IMAGE_ID


def test_legacy_archive_rootfs(store: ImageStore) -> None:
    load(store, legacy_archive())
    assert rootfs_files(store, "example/app:v1") == ["app", "app/run", "etc", "etc/motd"]


def test_legacy_symlinked_layer_shared(store: ImageStore) -> None:
    load(store, legacy_archive())
    assert store.get("example/base:v1").diff_ids == store.get("example/app:v1").diff_ids[:1]


def test_oci_layout_archive_loads(store: ImageStore) -> None:
    layers = [gzip_layer({"a": File(b"a")}), gzip_layer({"b": File(b"b")})]
    files = oci_files(layers, image_config(layers), "example.com/team/tool:2.0")
    loaded = load(store, tar_of(files))
    assert loaded[0].repo_tags == ["example.com/team/tool:2.0"]
    assert rootfs_files(store, "example.com/team/tool:2.0") == ["a", "b"]


def test_oci_layout_directory_loads(store: ImageStore, tmp_path: Path) -> None:
    layers = [gzip_layer({"a": File(b"a")})]
    layout = tmp_path / "layout"
    for name, content in oci_files(layers, image_config(layers), "tool:1").items():
        (layout / name).parent.mkdir(parents=True, exist_ok=True)
        (layout / name).write_bytes(content)  # type: ignore[arg-type]
    loaded = load(store, layout)
    assert loaded[0].repo_tags == ["tool:1"]


def test_oci_bare_tag_name_ignored(store: ImageStore) -> None:
    layers = [gzip_layer({"a": File(b"a")})]
    loaded = load(store, tar_of(oci_files(layers, image_config(layers), "latest")))
    assert loaded[0].repo_tags == []


def test_docker_oci_form_loads(store: ImageStore) -> None:
    # docker 25's form: an OCI layout plus a manifest.json naming the blobs.
    files = oci_files([BASE, TOP], CONFIG, None)
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{IMAGE_ID[7:]}",
            "RepoTags": ["app:v2"],
            "Layers": [f"blobs/sha256/{digest_of(x)[7:]}" for x in (BASE, TOP)],
        }
    ]
    files["manifest.json"] = json.dumps(docker_manifest).encode()  # fmt: skip
    assert load(store, tar_of(files))[0].repo_tags == ["app:v2"]
    assert store.get("app:v2").id == IMAGE_ID


def test_save_then_load_round_trip(store: ImageStore, other_store: ImageStore) -> None:
    load(store, legacy_archive())
    out = io.BytesIO()
    asyncio.run(store.save(["example/app:v1", "example/base:v1"], out))
    loaded = load(other_store, out.getvalue())
    assert [image.id for image in loaded] == [IMAGE_ID, digest_of(image_config([BASE]))]
    assert rootfs_files(other_store, "example/app:v1") == ["app", "app/run", "etc", "etc/motd"]


def test_save_layout_names(store: ImageStore) -> None:
    load(store, legacy_archive())
    out = io.BytesIO()
    asyncio.run(store.save(["example/app:v1"], out))
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        names = set(archive.getnames())
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", "manifest.json"} <= names
    assert manifest[0]["RepoTags"] == ["example/app:v1"]
    assert manifest[0]["Config"] == f"blobs/sha256/{IMAGE_ID[7:]}"


def test_save_gzip_layers_as_plain(store: ImageStore) -> None:
    layers = [gzip_layer({"a": File(b"a")})]
    config = image_config(layers)
    load(store, tar_of(oci_files(layers, config, "tool:1")))
    out = io.BytesIO()
    asyncio.run(store.save(["tool:1"], out))
    diff_id = json.loads(config)["rootfs"]["diff_ids"][0]
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        layer = archive.extractfile(f"blobs/sha256/{diff_id[7:]}")
        assert layer is not None
        assert digest_of(layer.read()) == diff_id


def test_save_unknown_image(store: ImageStore) -> None:
    with pytest.raises(Exception, match="No such image: nothing:latest"):
        asyncio.run(store.save(["nothing"], io.BytesIO()))


def test_skopeo_reads_saved_archive(store: ImageStore, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    load(store, legacy_archive())
    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as out:
        asyncio.run(store.save(["example/app:v1"], out))
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", f"docker-archive:{saved}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    layers = json.loads(result.stdout)["layers"]
    assert len(layers) == 2
    copied = subprocess.run(
        ["skopeo", "copy", f"docker-archive:{saved}", f"oci:{tmp_path / 'copy'}:app"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr


def test_skopeo_reads_saved_layout(store: ImageStore, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    load(store, legacy_archive())
    asyncio.run(store.save(["example/app:v1"], tmp_path / "layout"))
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'layout'}:v1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_load_skopeo_oci_copy(store: ImageStore, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    load(store, legacy_archive())
    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as out:
        asyncio.run(store.save(["example/app:v1"], out))
    target = tmp_path / "skopeo.tar"
    copied = subprocess.run(
        ["skopeo", "copy", f"docker-archive:{saved}", f"docker-archive:{target}:re/named:v3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert load(store, target.read_bytes())[0].repo_tags == ["re/named:v3"]


def test_import_rootfs(store: ImageStore) -> None:
    rootfs = gzip_layer({"bin/": Dir(), "bin/tool": File(b"x", 0o755), "etc/": Dir()})
    image = asyncio.run(store.import_rootfs(io.BytesIO(rootfs), "imported/root:1"))
    assert image.repo_tags == ["imported/root:1"]
    assert len(image.diff_ids) == 1
    assert rootfs_files(store, "imported/root:1") == ["bin", "bin/tool", "etc"]


def test_import_rootfs_without_name(store: ImageStore) -> None:
    image = asyncio.run(store.import_rootfs(io.BytesIO(layer_tar({"a": File()}))))
    assert image.repo_tags == []
    assert store.get(image.id).id == image.id


def test_import_hostile_rootfs_rejected(store: ImageStore, tmp_path: Path) -> None:
    rootfs = layer_tar({"link": Symlink(str(tmp_path)), "link/owned": File(b"x")})
    with pytest.raises(InvalidArgument, match="'link' is a symlink"):
        asyncio.run(store.import_rootfs(io.BytesIO(rootfs), "bad:1"))
    assert not (tmp_path / "owned").exists()
    assert store.list() == []
    assert store.snapshots.list() == []


def test_entry_outside_rejected(store: ImageStore) -> None:
    with pytest.raises(InvalidArgument, match="'..' would lead outside"):
        load(store, tar_of({"../evil": b"x"}))


def test_symlink_out_of_archive_rejected(store: ImageStore) -> None:
    manifest = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l.tar"]}]
    archive = tar_of({"manifest.json": json.dumps(manifest).encode(), "c.json": CONFIG,
                      "l.tar": "../../../etc/passwd"})  # fmt: skip
    with pytest.raises(InvalidArgument, match="outside the archive"):
        load(store, archive)


def test_diff_id_mismatch_leaves_nothing(store: ImageStore, tmp_path: Path) -> None:
    wrong = image_config([BASE, TOP], diff_ids=[digest_of(BASE), digest_of(BASE)])
    manifest = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["a.tar", "b.tar"]}]
    archive = tar_of({"manifest.json": json.dumps(manifest).encode(), "c.json": wrong,
                      "a.tar": BASE, "b.tar": TOP})  # fmt: skip
    with pytest.raises(InvalidArgument, match="diff ID mismatch"):
        load(store, archive)
    assert store.list() == []
    assert store.snapshots.list() == []
    assert os.listdir(tmp_path / "one" / "images" / "archives") == []


def test_not_an_archive_rejected(store: ImageStore) -> None:
    with pytest.raises(InvalidArgument, match="not a valid tar file"):
        load(store, b"this is not a tar file at all" * 30)


def test_archive_without_index_rejected(store: ImageStore) -> None:
    with pytest.raises(InvalidArgument, match="neither manifest.json"):
        load(store, tar_of({"something": b"x"}))


def test_load_with_copying_snapshotter(tmp_path: Path) -> None:
    with image_store(tmp_path / "copy", snapshotter="copy") as copying:
        load(copying, legacy_archive())
        assert rootfs_files(copying, "example/app:v1") == ["app", "app/run", "etc", "etc/motd"]


@pytest.fixture
def podman_root() -> Iterator[Path]:
    """Yield a short directory for podman's storage; podman rejects a long runroot."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    root = Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def podman(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run podman with private storage (vfs) under ``root``, touching nothing else."""
    storage = ["--root", str(root / "root"), "--runroot", str(root / "run"),
               "--tmpdir", str(root / "tmp"), "--storage-driver", "vfs",
               "--events-backend", "none", "--cgroup-manager", "cgroupfs"]  # fmt: skip
    return subprocess.run(["podman", *storage, *args], capture_output=True, text=True, timeout=120)


def test_podman_loads_saved_archive(store: ImageStore, tmp_path: Path, podman_root: Path) -> None:
    load(store, legacy_archive())
    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as out:
        asyncio.run(store.save(["example/app:v1"], out))
    loaded = podman(podman_root, "load", "--input", str(saved))
    assert loaded.returncode == 0, loaded.stderr
    assert "Loaded image: docker.io/example/app:v1" in loaded.stdout
    listed = podman(podman_root, "image", "inspect", "--format", "{{.Id}}", "example/app:v1")
    assert listed.stdout.strip() == IMAGE_ID[7:]


def test_ketch_loads_podman_save(store: ImageStore, tmp_path: Path, podman_root: Path) -> None:
    load(store, legacy_archive())
    archive = tmp_path / "legacy.tar"
    archive.write_bytes(legacy_archive())
    assert podman(podman_root, "load", "--input", str(archive)).returncode == 0
    for format_name in ("docker-archive", "oci-archive"):
        saved = tmp_path / f"{format_name}.tar"
        result = podman(podman_root, "save", "--format", format_name, "--output", str(saved),
                        "example/app:v1")  # fmt: skip
        assert result.returncode == 0, result.stderr
        loaded = load(store, saved.read_bytes())
        # podman writes the config again, so the image ID differs; the files must not.
        assert store.get(loaded[0].id).diff_ids == store.get("example/app:v1").diff_ids
        assert len(loaded[0].repo_tags) == 1
        assert loaded[0].repo_tags[0].endswith("example/app:v1")


def test_load_bounded_by_unpack_limits(tmp_path: Path) -> None:
    with image_store(tmp_path / "small", unpack_limits=UnpackLimits(max_entries=2)) as small:
        with pytest.raises(InvalidArgument, match="more than 2 entries"):
            load(small, legacy_archive())
        assert small.list() == []


def test_gzip_compressed_archive_loads(store: ImageStore) -> None:
    # docker load reads `docker save | gzip` output too.
    loaded = load(store, gzip.compress(legacy_archive()))
    assert [image.repo_tags for image in loaded] == [["example/app:v1"], ["example/base:v1"]]


def test_import_with_digest_rejected(store: ImageStore) -> None:
    reference = "imported/root@sha256:" + "a" * 64
    with pytest.raises(InvalidArgument, match="name the image with a tag"):
        asyncio.run(store.import_rootfs(io.BytesIO(layer_tar({"a": File()})), reference))
    assert store.list() == []


def test_absolute_symlink_in_archive_rejected(store: ImageStore) -> None:
    manifest = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l.tar"]}]
    archive = tar_of({"manifest.json": json.dumps(manifest).encode(), "c.json": CONFIG,
                      "l.tar": "/etc/passwd"})  # fmt: skip
    with pytest.raises(InvalidArgument, match="outside the archive"):
        load(store, archive)


def test_symlink_loop_in_archive_rejected(store: ImageStore) -> None:
    manifest = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["a.tar"]}]
    archive = tar_of({"manifest.json": json.dumps(manifest).encode(), "c.json": CONFIG,
                      "a.tar": "b.tar", "b.tar": "a.tar"})  # fmt: skip
    with pytest.raises(InvalidArgument, match="too many levels of symlinks"):
        load(store, archive)


def test_hard_linked_layer_loads(store: ImageStore) -> None:
    manifest = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["a/l.tar", "b/same.tar"]}]
    files = {"manifest.json": json.dumps(manifest).encode(), "c.json": CONFIG,
             "a/l.tar": BASE, "b/l.tar": TOP}  # fmt: skip
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("b/same.tar")
        link.type, link.linkname = tarfile.LNKTYPE, "b/l.tar"
        archive.addfile(link)
    assert load(store, buffer.getvalue())[0].id == IMAGE_ID
