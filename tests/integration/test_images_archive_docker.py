"""Archives between ketch and Debian's dockerd 20.10: what ketch saves, ``docker load``
reads, and what ``docker save`` writes (the legacy layout), ketch loads.

dockerd runs privately in a network namespace, set up and stopped as in the dockerd
caller tests, whose helper class this module reuses.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.images import ImageStore
from support.cgroups import remove_cgroup_trees
from support.dockerd import DOCKERD, Dockerd
from support.images import Dir, File, Whiteout, digest_of, image_config, image_store, layer_tar
from support.netns import network_namespace

BASE = layer_tar({"etc/": Dir(), "etc/motd": File(b"base\n"), "etc/old": File(b"old")})
TOP = layer_tar({"etc/old": Whiteout(), "app/": Dir(), "app/run": File(b"run\n")})
CONFIG = image_config([BASE, TOP], cmd=["/app/run"])


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    if not DOCKERD.exists() or shutil.which("docker") is None:
        pytest.skip("docker.io is not installed (/usr/sbin/dockerd and docker)")
    # A short path: dockerd and containerd put unix sockets under the exec root.
    root = Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp"))
    cgroup_parent = f"ketch-archive-{secrets.token_hex(4)}"
    with network_namespace("ketch-dload") as namespace:
        daemon = Dockerd(root, namespace, cgroup_parent)
        try:
            daemon.wait_until_ready()
            yield daemon
        finally:
            daemon.stop()
            subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
            subprocess.run(["umount", "-R", "-l", str(root / "data")], capture_output=True)
            remove_cgroup_trees(cgroup_parent)
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path / "store") as opened:
        yield opened


def legacy_archive() -> bytes:
    manifest = [{"Config": "config.json", "RepoTags": ["example/app:v1"],
                 "Layers": ["a/layer.tar", "b/layer.tar"]}]  # fmt: skip
    files = {"manifest.json": json.dumps(manifest).encode(), "config.json": CONFIG,
             "a/layer.tar": BASE, "b/layer.tar": TOP}  # fmt: skip
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_docker_loads_ketch_save(dockerd: Dockerd, store: ImageStore, tmp_path: Path) -> None:
    asyncio.run(store.load(io.BytesIO(legacy_archive())))
    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as out:
        asyncio.run(store.save(["example/app:v1"], out))
    loaded = dockerd.docker("load", "--input", str(saved))
    assert loaded.returncode == 0, loaded.stderr + dockerd.log_text()
    assert "Loaded image: example/app:v1" in loaded.stdout
    inspect = dockerd.docker("image", "inspect", "--format", "{{.Id}}", "example/app:v1")
    assert inspect.stdout.strip() == digest_of(CONFIG)


def test_ketch_loads_docker_save(dockerd: Dockerd, store: ImageStore, tmp_path: Path) -> None:
    archive = tmp_path / "from-docker.tar"
    archive.write_bytes(legacy_archive())
    loaded = dockerd.docker("load", "--input", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    tagged = dockerd.docker("tag", "example/app:v1", "example/app:saved")
    assert tagged.returncode == 0, tagged.stderr
    saved = tmp_path / "docker-save.tar"
    result = dockerd.docker("save", "--output", str(saved), "example/app:saved")
    assert result.returncode == 0, result.stderr
    with open(saved, "rb") as source:
        images = asyncio.run(store.load(source))
    assert images[0].repo_tags == ["example/app:saved"]
    merged = store.prepare_rootfs("check", store.get("example/app:saved"))
    try:
        assert sorted(p.name for p in (merged / "etc").iterdir()) == ["motd"]
    finally:
        store.release_rootfs("check")
