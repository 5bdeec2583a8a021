"""A loopback HTTP proxy in front of a test registry that records, delays and cuts.

``RegistryProxy`` forwards every request to ``upstream`` ("127.0.0.1:PORT") and records
``(method, path, Accept, Range)`` per request. For the blob named ``cut_digest`` it can cut
the first ``cuts`` GETs after ``cut_after`` bytes (the connection closes while the client
waits for the rest) and drop the Range header (a registry that ignores ranges). Requests
whose path ends with a key of ``delays`` wait that many seconds before they are forwarded.

It runs in the caller's event loop::

    proxy = RegistryProxy(registry, cut_digest=digest, cuts=1)
    async with proxy.running():
        await store.pull(f"{proxy.address}/test/app:v1")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

FORWARDED_HEADERS = ("Content-Type", "Content-Range", "Docker-Content-Digest", "Accept-Ranges")


@dataclass
class ProxiedRequest:
    method: str
    path: str
    accept: str | None
    range: str | None
    arrived: float  # time.monotonic() when the request arrived
    answered: float = 0.0  # time.monotonic() when the upstream response was read


@dataclass
class RegistryProxy:
    upstream: str
    cut_digest: str = ""
    cuts: int = 0
    cut_after: int = 0
    strip_range: bool = False
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[ProxiedRequest] = field(default_factory=list)
    address: str = ""

    def blob_ranges(self, digest: str) -> list[str | None]:
        """Return the Range header of each GET of the blob ``digest``, in order."""
        return [r.range for r in self.requests if r.method == "GET" and r.path.endswith(digest)]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RegistryProxy]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.address = f"127.0.0.1:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = ProxiedRequest(
            request.method,
            request.path,
            request.headers.get("Accept"),
            request.headers.get("Range"),
            time.monotonic(),
        )
        self.requests.append(record)
        for suffix, seconds in self.delays.items():
            if request.path.endswith(suffix):
                await asyncio.sleep(seconds)

        is_cut_blob = bool(self.cut_digest) and request.path.endswith(f"/blobs/{self.cut_digest}")
        headers = {k: v for k, v in request.headers.items() if k in ("Accept", "Range")}
        if is_cut_blob and self.strip_range:
            headers.pop("Range", None)
        url = f"http://{self.upstream}{request.path_qs}"
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, url, headers=headers) as upstream:
                body = await upstream.read()
                status = upstream.status
                forwarded = {
                    k: upstream.headers[k] for k in FORWARDED_HEADERS if k in upstream.headers
                }

        record.answered = time.monotonic()
        if is_cut_blob and request.method == "GET" and self.cuts > 0:
            self.cuts -= 1
            return await self._cut(request, status, forwarded, body)
        return web.Response(status=status, body=body, headers=forwarded)

    async def _cut(
        self, request: web.Request, status: int, headers: dict[str, str], body: bytes
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: self.cut_after])
        assert request.transport is not None
        request.transport.close()
        return response
