"""Interrupted pulls resume with HTTP Range: a loopback proxy in front of a real
docker-registry cuts the connection in the middle of a layer blob."""

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import support.registry
from ketch.errors import Unavailable
from ketch.images import ImageStore
from ketch.images import pull as pull_module
from support.images import Dir, File, digest_of, gzip_layer, image_store, push_test_image

registry = support.registry.registry

BASE = gzip_layer({"etc/": Dir(), "etc/motd": File(b"base\n")})
# Random bytes do not compress, so the blob is larger than CUT_AFTER.
BIG = gzip_layer({"data/": Dir(), "data/random": File(os.urandom(600_000))})
BIG_DIGEST = digest_of(BIG)
CUT_AFTER = 200_000
FORWARDED_HEADERS = ("Content-Type", "Content-Range", "Docker-Content-Digest", "Accept-Ranges")


@dataclass
class CuttingProxy:
    """Forwards to ``upstream``; cuts the first ``cuts`` GETs of BIG after CUT_AFTER bytes."""

    upstream: str
    cuts: int = 0
    strip_range: bool = False
    ranges: list[str | None] = field(default_factory=list)
    address: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        is_big = request.path.endswith(f"/blobs/{BIG_DIGEST}") and request.method == "GET"
        headers = {k: v for k, v in request.headers.items() if k in ("Accept", "Range")}
        if is_big:
            self.ranges.append(request.headers.get("Range"))
            if self.strip_range:
                headers.pop("Range", None)
        url = f"http://{self.upstream}{request.path_qs}"
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, url, headers=headers) as upstream:
                body = await upstream.read()
                forwarded = {
                    k: upstream.headers[k] for k in FORWARDED_HEADERS if k in upstream.headers
                }
        if is_big and self.cuts > 0:
            self.cuts -= 1
            response = web.StreamResponse(status=upstream.status, headers=forwarded)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[:CUT_AFTER])
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(status=upstream.status, body=body, headers=forwarded)


async def with_proxy(proxy: CuttingProxy, body: Any) -> Any:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.address = f"127.0.0.1:{port}"
    try:
        return await body()
    finally:
        await runner.cleanup()


def pull_through(store: ImageStore, proxy: CuttingProxy) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def body() -> None:
        await store.pull(f"{proxy.address}/test/app:v1", messages.append)

    asyncio.run(with_proxy(proxy, body))
    return messages


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ImageStore]:
    monkeypatch.setattr(pull_module, "RETRY_DELAY_SECONDS", 0.05)
    with image_store(tmp_path / "ketch") as opened:
        yield opened


@pytest.fixture
def pushed(registry: str) -> str:
    push_test_image(registry, "test/app", "v1", [BASE, BIG])
    return registry


def test_cut_download_resumes_in_pull(store: ImageStore, pushed: str) -> None:
    proxy = CuttingProxy(pushed, cuts=1)
    messages = pull_through(store, proxy)
    assert proxy.ranges == [None, f"bytes={CUT_AFTER}-"]
    assert "Retrying in 0.05 seconds" in [m.get("status") for m in messages]
    assert store.content.exists(BIG_DIGEST)
    assert not store.content.partial_path(BIG_DIGEST).exists()


def test_failed_pull_keeps_partial(
    store: ImageStore, pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pull_module, "DOWNLOAD_ATTEMPTS", 1)
    with pytest.raises(Unavailable, match="unreachable"):
        pull_through(store, CuttingProxy(pushed, cuts=1))
    assert store.content.partial_size(BIG_DIGEST) == CUT_AFTER
    assert not store.content.exists(BIG_DIGEST)


def test_next_pull_resumes_partial(
    store: ImageStore, pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pull_module, "DOWNLOAD_ATTEMPTS", 1)
    with pytest.raises(Unavailable):
        pull_through(store, CuttingProxy(pushed, cuts=1))
    proxy = CuttingProxy(pushed)
    pull_through(store, proxy)
    assert proxy.ranges == [f"bytes={CUT_AFTER}-"]
    assert store.content.exists(BIG_DIGEST)
    assert not store.content.partial_path(BIG_DIGEST).exists()


def test_partial_survives_store_reopen(tmp_path: Path, pushed: str) -> None:
    store_root = tmp_path / "reopened"
    with image_store(store_root) as first:
        first_partial = first.content.partial_path(BIG_DIGEST)
        first_partial.write_bytes(BIG[:CUT_AFTER])
    with image_store(store_root) as second:
        proxy = CuttingProxy(pushed)
        pull_through(second, proxy)
    assert proxy.ranges == [f"bytes={CUT_AFTER}-"]


def test_range_ignored_restarts(store: ImageStore, pushed: str) -> None:
    proxy = CuttingProxy(pushed, cuts=1, strip_range=True)
    pull_through(store, proxy)
    assert len(proxy.ranges) == 2
    assert store.content.exists(BIG_DIGEST)


def test_corrupt_partial_downloaded_again(store: ImageStore, pushed: str) -> None:
    store.content.partial_path(BIG_DIGEST).write_bytes(b"\0" * CUT_AFTER)
    proxy = CuttingProxy(pushed)
    pull_through(store, proxy)
    assert proxy.ranges == [f"bytes={CUT_AFTER}-", None]
    assert store.content.exists(BIG_DIGEST)


def test_oversized_partial_discarded(store: ImageStore, pushed: str) -> None:
    store.content.partial_path(BIG_DIGEST).write_bytes(b"\0" * (len(BIG) + 1))
    proxy = CuttingProxy(pushed)
    pull_through(store, proxy)
    assert proxy.ranges == [None]
    assert store.content.exists(BIG_DIGEST)
