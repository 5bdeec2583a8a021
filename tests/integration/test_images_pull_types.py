"""Every manifest type through a real registry, the Accept header that requests them, and
the config and layers fetched at the same time (seen through a recording proxy)."""

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import support.registry
from ketch.images import Image, ImageStore
from ketch.images.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from support.images import (
    Dir,
    File,
    digest_of,
    gzip_layer,
    image_config,
    image_store,
    push_index,
    push_test_image,
)
from support.registry_proxy import RegistryProxy

registry = support.registry.registry

BASE = gzip_layer({"etc/": Dir(), "etc/motd": File(b"base\n")})
TOP = gzip_layer({"data/": Dir(), "data/random": File(os.urandom(50_000))})
CONFIG_DELAY_SECONDS = 1.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with image_store(tmp_path / "ketch") as opened:
        yield opened


def pull_through(store: ImageStore, proxy: RegistryProxy, path: str) -> Image:
    async def body() -> Image:
        async with proxy.running():
            return await store.pull(f"{proxy.address}/{path}")

    return asyncio.run(body())


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_pull_manifest_type(store: ImageStore, registry: str, media_type: str) -> None:
    pushed = push_test_image(
        registry, "test/app", "v1", [BASE, TOP], manifest_media_type=media_type
    )
    image = asyncio.run(store.pull(f"{registry}/test/app:v1"))
    assert image.id == pushed.config_digest


@pytest.mark.parametrize("oci", [True, False])
def test_pull_index_type(store: ImageStore, registry: str, oci: bool) -> None:
    arm = push_test_image(registry, "test/multi", "arm", [TOP],
                          image_config([TOP], architecture="arm64"),
                          manifest_media_type=OCI_MANIFEST if oci else DOCKER_MANIFEST)  # fmt: skip
    amd = push_test_image(registry, "test/multi", "amd", [BASE],
                          manifest_media_type=OCI_MANIFEST if oci else DOCKER_MANIFEST)  # fmt: skip
    push_index(registry, "test/multi", "v1", {"linux/arm64": arm, "linux/amd64": amd}, oci=oci)
    image = asyncio.run(store.pull(f"{registry}/test/multi:v1"))
    assert image.id == amd.config_digest


def test_accept_header_lists_every_type(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/app", "v1", [BASE])
    proxy = RegistryProxy(registry)
    pull_through(store, proxy, "test/app:v1")
    manifest_requests = [r for r in proxy.requests if "/manifests/" in r.path]
    accepted = {part.strip() for part in (manifest_requests[0].accept or "").split(",")}
    for media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST):
        assert media_type in accepted


def test_layers_fetched_with_config(store: ImageStore, registry: str) -> None:
    pushed = push_test_image(registry, "test/app", "v1", [BASE, TOP])
    proxy = RegistryProxy(registry, delays={pushed.config_digest: CONFIG_DELAY_SECONDS})
    pull_through(store, proxy, "test/app:v1")
    config = next(r for r in proxy.requests if r.path.endswith(pushed.config_digest))
    layers = [r for r in proxy.requests if r.path.endswith((digest_of(BASE), digest_of(TOP)))]
    assert len(layers) == 2
    for layer in layers:
        assert layer.arrived < config.answered


def test_present_blobs_not_fetched(store: ImageStore, registry: str) -> None:
    push_test_image(registry, "test/one", "v1", [BASE])
    push_test_image(registry, "test/two", "v1", [BASE, TOP])
    asyncio.run(store.pull(f"{registry}/test/one:v1"))
    proxy = RegistryProxy(registry)
    pull_through(store, proxy, "test/two:v1")
    assert proxy.blob_ranges(digest_of(BASE)) == []
    assert proxy.blob_ranges(digest_of(TOP)) == [None]
