"""Interrupted pulls resume with HTTP Range: a loopback proxy in front of a real
docker-registry cuts the connection in the middle of a layer blob."""

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import support.registry
from ketch.errors import Unavailable
from ketch.images import ImageStore, layer_download
from support.images import Dir, File, digest_of, gzip_layer, image_store, push_test_image
from support.registry_proxy import RegistryProxy

registry = support.registry.registry

BASE = gzip_layer({"etc/": Dir(), "etc/motd": File(b"base\n")})
# Random bytes do not compress, so the blob is larger than CUT_AFTER.
BIG = gzip_layer({"data/": Dir(), "data/random": File(os.urandom(600_000))})
BIG_DIGEST = digest_of(BIG)
CUT_AFTER = 200_000


def make_proxy(upstream: str, cuts: int = 0, strip_range: bool = False) -> RegistryProxy:
    return RegistryProxy(
        upstream, cut_digest=BIG_DIGEST, cuts=cuts, cut_after=CUT_AFTER, strip_range=strip_range
    )


def pull_through(store: ImageStore, proxy: RegistryProxy) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def body() -> None:
        async with proxy.running():
            await store.pull(f"{proxy.address}/test/app:v1", messages.append)

    asyncio.run(body())
    return messages


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ImageStore]:
    monkeypatch.setattr(layer_download, "RETRY_DELAY_SECONDS", 0.05)
    with image_store(tmp_path / "ketch") as opened:
        yield opened


@pytest.fixture
def pushed(registry: str) -> str:
    push_test_image(registry, "test/app", "v1", [BASE, BIG])
    return registry


def test_cut_download_resumes_in_pull(store: ImageStore, pushed: str) -> None:
    proxy = make_proxy(pushed, cuts=1)
    messages = pull_through(store, proxy)
    assert proxy.blob_ranges(BIG_DIGEST) == [None, f"bytes={CUT_AFTER}-"]
    assert "Retrying in 0.05 seconds" in [m.get("status") for m in messages]
    assert store.content.exists(BIG_DIGEST)
    assert not store.content.partial_path(BIG_DIGEST).exists()


def test_failed_pull_keeps_partial(
    store: ImageStore, pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_download, "DOWNLOAD_ATTEMPTS", 1)
    with pytest.raises(Unavailable, match="unreachable"):
        pull_through(store, make_proxy(pushed, cuts=1))
    assert store.content.partial_size(BIG_DIGEST) == CUT_AFTER
    assert not store.content.exists(BIG_DIGEST)


def test_next_pull_resumes_partial(
    store: ImageStore, pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_download, "DOWNLOAD_ATTEMPTS", 1)
    with pytest.raises(Unavailable):
        pull_through(store, make_proxy(pushed, cuts=1))
    proxy = make_proxy(pushed)
    pull_through(store, proxy)
    assert proxy.blob_ranges(BIG_DIGEST) == [f"bytes={CUT_AFTER}-"]
    assert store.content.exists(BIG_DIGEST)
    assert not store.content.partial_path(BIG_DIGEST).exists()


def test_partial_survives_store_reopen(tmp_path: Path, pushed: str) -> None:
    store_root = tmp_path / "reopened"
    with image_store(store_root) as first:
        first_partial = first.content.partial_path(BIG_DIGEST)
        first_partial.write_bytes(BIG[:CUT_AFTER])
    with image_store(store_root) as second:
        proxy = make_proxy(pushed)
        pull_through(second, proxy)
    assert proxy.blob_ranges(BIG_DIGEST) == [f"bytes={CUT_AFTER}-"]


def test_range_ignored_restarts(store: ImageStore, pushed: str) -> None:
    proxy = make_proxy(pushed, cuts=1, strip_range=True)
    pull_through(store, proxy)
    assert len(proxy.blob_ranges(BIG_DIGEST)) == 2
    assert store.content.exists(BIG_DIGEST)


def test_corrupt_partial_downloaded_again(store: ImageStore, pushed: str) -> None:
    store.content.partial_path(BIG_DIGEST).write_bytes(b"\0" * CUT_AFTER)
    proxy = make_proxy(pushed)
    pull_through(store, proxy)
    assert proxy.blob_ranges(BIG_DIGEST) == [f"bytes={CUT_AFTER}-", None]
    assert store.content.exists(BIG_DIGEST)


def test_oversized_partial_discarded(store: ImageStore, pushed: str) -> None:
    store.content.partial_path(BIG_DIGEST).write_bytes(b"\0" * (len(BIG) + 1))
    proxy = make_proxy(pushed)
    pull_through(store, proxy)
    assert proxy.blob_ranges(BIG_DIGEST) == [None]
    assert store.content.exists(BIG_DIGEST)
