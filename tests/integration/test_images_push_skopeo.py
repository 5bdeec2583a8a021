"""Interoperation with skopeo (Debian's package): skopeo reads what ketch pushed, and ketch
pulls what skopeo pushed, through a real docker-registry on loopback."""

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import support.registry
from ketch.images import ImageStore
from ketch.images.manifest import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from support.images import (
    Dir,
    File,
    digest_of,
    gzip_layer,
    image_config,
    image_store,
    push_test_image,
)

registry = support.registry.registry

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")

BASE = gzip_layer({"etc/": Dir(), "etc/motd": File(b"base\n")})
TOP = gzip_layer({"data/": Dir(), "data/random": File(os.urandom(50_000))})
SKOPEO_TIMEOUT_SECONDS = 120


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path / "ketch") as opened:
        yield opened


def skopeo(*arguments: str) -> str:
    command = ["skopeo", "--insecure-policy", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT_SECONDS)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    return result.stdout


def write_oci_layout(directory: Path, tag: str, layers: list[bytes], config: bytes) -> str:
    """Write an OCI image layout with one image; return its manifest digest."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in [*layers, config]:
        (blobs / digest_of(blob).removeprefix("sha256:")).write_bytes(blob)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": digest_of(layer), "size": len(layer)}
            for layer in layers
        ],
    }).encode()  # fmt: skip
    manifest_digest = digest_of(manifest)
    (blobs / manifest_digest.removeprefix("sha256:")).write_bytes(manifest)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return manifest_digest


def test_skopeo_reads_ketch_push(tmp_path: Path, store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE, TOP])
    asyncio.run(store.pull(f"{registry}/test/app:v1"))
    store.tag(f"{registry}/test/app:v1", f"{registry}/ketch/pushed:v2")
    digest = asyncio.run(store.push(f"{registry}/ketch/pushed:v2"))

    inspected = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{registry}/ketch/pushed:v2")
    )
    assert inspected["Digest"] == digest
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry}/ketch/pushed:v2",
           f"oci:{tmp_path / 'copy'}:v2")  # fmt: skip
    # skopeo rewrites the config when it converts to OCI, but keeps the layer blobs.
    blobs = tmp_path / "copy" / "blobs" / "sha256"
    for layer in (BASE, TOP):
        assert (blobs / digest_of(layer).removeprefix("sha256:")).read_bytes() == layer


def test_ketch_pulls_skopeo_push(tmp_path: Path, store: ImageStore, registry: str) -> None:
    config = image_config([BASE, TOP], cmd=["echo", "from-skopeo"])
    write_oci_layout(tmp_path / "layout", "v1", [BASE, TOP], config)
    skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:v1",
           f"docker://{registry}/skopeo/pushed:v1")  # fmt: skip
    image = asyncio.run(store.pull(f"{registry}/skopeo/pushed:v1"))
    assert image.id == digest_of(config)
    assert image.config["Cmd"] == ["echo", "from-skopeo"]


def test_ketch_pulls_skopeo_docker_format(store: ImageStore, registry: str) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE, TOP])
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "v2s2",
           f"docker://{registry}/test/app:v1", f"docker://{registry}/skopeo/v2s2:v1")  # fmt: skip
    image = asyncio.run(store.pull(f"{registry}/skopeo/v2s2:v1"))
    assert image.id == pushed.config_digest
