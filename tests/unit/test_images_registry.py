"""The registry client: endpoint choice, Basic and Bearer challenges, ranges, errors.

The HTTP tests run a small aiohttp server on 127.0.0.1 that responds like a registry, so
that each case (a challenge's scopes, a token service's refusal, a wrong Content-Range)
can be staged exactly. The integration tests run the same flows against docker-registry.
"""

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from ketch.errors import Forbidden, InvalidArgument, NotFound, Unavailable
from ketch.images.auth import Credentials
from ketch.images.endpoints import (
    DOCKER_HUB_URL,
    Endpoint,
    endpoints_for,
    is_insecure,
    validate_insecure_registry,
    validate_mirror,
)
from ketch.images.manifest import Descriptor
from ketch.images.registry import (
    RegistryClient,
    describe_error_body,
    open_session,
    parse_challenge,
)

MANIFEST = json.dumps({"schemaVersion": 2, "layers": []}).encode()
TOKEN = "anonymous-token"


def test_endpoints_docker_hub_without_mirrors() -> None:
    assert endpoints_for("docker.io", [], []) == [Endpoint(DOCKER_HUB_URL, "docker.io")]


def test_endpoints_mirrors_only() -> None:
    mirrors = ["http://127.0.0.1:5000", "https://mirror.example"]
    urls = [endpoint.url for endpoint in endpoints_for("docker.io", mirrors, [])]
    assert urls == mirrors


def test_endpoints_mirrors_not_for_other_registries() -> None:
    endpoints = endpoints_for("example.com", ["http://127.0.0.1:5000"], [])
    assert endpoints == [Endpoint("https://example.com", "example.com")]


@pytest.mark.parametrize(
    ("domain", "insecure", "expected"),
    [
        ("127.0.0.1:5000", [], True),
        ("127.8.9.10", [], True),
        ("localhost:5000", [], True),
        ("[::1]:5000", [], True),
        ("example.com", [], False),
        ("10.1.2.3:5000", [], False),
        ("10.1.2.3:5000", ["10.0.0.0/8"], True),
        ("registry.lan:5000", ["registry.lan:5000"], True),
        ("registry.lan", ["registry.lan"], True),
        ("other.lan", ["registry.lan"], False),
    ],
)
def test_is_insecure(domain: str, insecure: list[str], expected: bool) -> None:
    assert is_insecure(domain, insecure) is expected


@pytest.mark.parametrize(
    "url", ["127.0.0.1:5000", "ftp://host", "http://host/path", "http://u@host"]
)
def test_validate_mirror_rejects(url: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid registry mirror"):
        validate_mirror(url)


def test_validate_mirror_strips_slash() -> None:
    assert validate_mirror("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"


@pytest.mark.parametrize("entry", ["http://host:5000", "", "host/path"])
def test_validate_insecure_registry_rejects(entry: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid insecure registry"):
        validate_insecure_registry(entry)


def test_parse_challenge_bearer() -> None:
    header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'
    scheme, parameters = parse_challenge(header)
    assert scheme == "bearer"
    assert parameters == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull",
    }


def test_parse_challenge_basic() -> None:
    assert parse_challenge('Basic realm="Registry"') == ("basic", {"realm": "Registry"})


def test_describe_error_body() -> None:
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
    assert describe_error_body(body.encode()) == "manifest unknown: manifest unknown"


def test_describe_error_body_not_json() -> None:
    assert describe_error_body(b"<html>") == ""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def with_server(
    routes: list[tuple[str, str, Handler]], body: Callable[[str], Awaitable[Any]]
) -> Any:
    """Serve ``routes`` on 127.0.0.1 and run ``body(address)``."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await body(f"127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def client_for(session: Any, address: str, repository: str = "test/repo") -> RegistryClient:
    return RegistryClient(session, Endpoint(f"http://{address}", address), repository)


def test_bearer_challenge_fetches_token() -> None:
    token_queries: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        token_queries.append(dict(request.query))
        return web.json_response({"token": TOKEN})

    async def manifest(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"http://{request.host}/token"
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:test/repo:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(
            body=MANIFEST, content_type="application/vnd.oci.image.manifest.v1+json"
        )

    async def body(address: str) -> Any:
        async with open_session() as session:
            return await client_for(session, address).get_manifest("latest", "test/repo:latest")

    routes = [("GET", "/token", token), ("GET", "/v2/test/repo/manifests/latest", manifest)]
    fetched = asyncio.run(with_server(routes, body))
    assert fetched.data == MANIFEST
    assert fetched.digest == "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    assert token_queries == [{"service": "fake", "scope": "repository:test/repo:pull"}]


def test_basic_challenge_is_forbidden() -> None:
    async def manifest(request: web.Request) -> web.Response:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async def body(address: str) -> Any:
        async with open_session() as session:
            return await client_for(session, address).get_manifest("latest", "test/repo:latest")

    with pytest.raises(Forbidden, match="requires a login"):
        asyncio.run(with_server([("GET", "/v2/test/repo/manifests/latest", manifest)], body))


def test_manifest_unknown_is_not_found() -> None:
    async def manifest(request: web.Request) -> web.Response:
        errors = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
        return web.json_response(errors, status=404)

    async def body(address: str) -> Any:
        async with open_session() as session:
            return await client_for(session, address).get_manifest("nope", "test/repo:nope")

    with pytest.raises(NotFound, match="manifest for test/repo:nope not found: manifest unknown"):
        asyncio.run(with_server([("GET", "/v2/test/repo/manifests/nope", manifest)], body))


def test_server_error_is_unavailable() -> None:
    async def manifest(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    async def body(address: str) -> Any:
        async with open_session() as session:
            return await client_for(session, address).get_manifest("latest", "test/repo:latest")

    with pytest.raises(Unavailable, match="returned HTTP 503"):
        asyncio.run(with_server([("GET", "/v2/test/repo/manifests/latest", manifest)], body))


def test_manifest_by_digest_verified() -> None:
    claimed = "sha256:" + "0" * 64

    async def manifest(request: web.Request) -> web.Response:
        return web.Response(body=MANIFEST, content_type="application/json")

    async def body(address: str) -> Any:
        async with open_session() as session:
            return await client_for(session, address).get_manifest(claimed, "test/repo")

    with pytest.raises(InvalidArgument, match="does not match its digest"):
        asyncio.run(with_server([("GET", f"/v2/test/repo/manifests/{claimed}", manifest)], body))


def test_blob_download_streams_chunks() -> None:
    data = b"x" * 300_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=data)

    async def body(address: str) -> bytes:
        chunks: list[bytes] = []
        async with open_session() as session:
            descriptor = Descriptor("application/octet-stream", digest, len(data))
            await client_for(session, address).download_blob(descriptor, chunks.append)
        return b"".join(chunks)

    assert asyncio.run(with_server([("GET", f"/v2/test/repo/blobs/{digest}", blob)], body)) == data


def test_redirect_target_challenge_ignored() -> None:
    """A 401 from the host that a blob download was redirected to sends no credentials to
    the token service that host names."""
    data = b"blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    token_requests: list[str | None] = []
    storage: dict[str, str] = {}

    async def token(request: web.Request) -> web.Response:
        token_requests.append(request.headers.get("Authorization"))
        return web.json_response({"token": TOKEN})

    async def stored_blob(request: web.Request) -> web.Response:
        challenge = f'Bearer realm="http://{request.host}/token",service="storage"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async def blob(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://{storage['address']}/blob")

    async def download(address: str) -> None:
        async with open_session() as session:
            client = RegistryClient(
                session, Endpoint(f"http://{address}", address), "test/repo",
                credentials=Credentials("alice", "pw"),
            )  # fmt: skip
            descriptor = Descriptor("application/octet-stream", digest, len(data))
            await client.download_blob(descriptor, lambda chunk: None)

    async def body(storage_address: str) -> None:
        storage["address"] = storage_address
        await with_server([("GET", f"/v2/test/repo/blobs/{digest}", blob)], download)

    storage_routes = [("GET", "/blob", stored_blob), ("GET", "/token", token)]
    with pytest.raises(NotFound, match="pull access denied for test/repo"):
        asyncio.run(with_server(storage_routes, body))
    assert token_requests == []


def test_unreachable_registry_named() -> None:
    async def body() -> None:
        async with open_session() as session:
            client = RegistryClient(session, Endpoint("http://127.0.0.1:1", "127.0.0.1:1"), "a/b")
            await client.get_manifest("latest", "127.0.0.1:1/a/b:latest")

    with pytest.raises(Unavailable, match="registry 127.0.0.1:1 is unreachable"):
        asyncio.run(body())


def test_basic_challenge_sends_credentials() -> None:
    credentials = Credentials("alice", "pw")

    async def manifest(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != credentials.basic_header():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return web.Response(body=MANIFEST, content_type="application/json")

    async def body(address: str) -> Any:
        async with open_session() as session:
            client = RegistryClient(
                session, Endpoint(f"http://{address}", address), "test/repo",
                credentials=credentials,
            )  # fmt: skip
            return await client.get_manifest("latest", "test/repo:latest")

    routes = [("GET", "/v2/test/repo/manifests/latest", manifest)]
    assert asyncio.run(with_server(routes, body)).data == MANIFEST


def test_token_request_with_credentials() -> None:
    credentials = Credentials("alice", "pw")
    token_requests: list[tuple[list[tuple[str, str]], str | None]] = []

    async def token(request: web.Request) -> web.Response:
        token_requests.append((list(request.query.items()), request.headers.get("Authorization")))
        return web.json_response({"access_token": TOKEN})

    async def manifest(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            challenge = (
                f'Bearer realm="http://{request.host}/token",service="svc",'
                'scope="repository:test/repo:pull repository:other/repo:pull"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(body=MANIFEST, content_type="application/json")

    async def body(address: str) -> Any:
        async with open_session() as session:
            client = RegistryClient(
                session, Endpoint(f"http://{address}", address), "test/repo",
                credentials=credentials,
            )  # fmt: skip
            return await client.get_manifest("latest", "test/repo:latest")

    routes = [("GET", "/token", token), ("GET", "/v2/test/repo/manifests/latest", manifest)]
    asyncio.run(with_server(routes, body))
    query, authorization = token_requests[0]
    assert query == [
        ("scope", "repository:test/repo:pull"),
        ("scope", "repository:other/repo:pull"),
        ("service", "svc"),
        ("account", "alice"),
    ]
    assert authorization == credentials.basic_header()


def test_token_service_rejects_credentials() -> None:
    async def token(request: web.Request) -> web.Response:
        return web.Response(status=401)

    async def manifest(request: web.Request) -> web.Response:
        challenge = f'Bearer realm="http://{request.host}/token",service="svc"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async def body(address: str) -> Any:
        async with open_session() as session:
            client = RegistryClient(
                session, Endpoint(f"http://{address}", address), "test/repo",
                credentials=Credentials("alice", "wrong"),
            )  # fmt: skip
            return await client.get_manifest("latest", "test/repo:latest")

    routes = [("GET", "/token", token), ("GET", "/v2/test/repo/manifests/latest", manifest)]
    with pytest.raises(Forbidden, match="rejected the credentials of user alice"):
        asyncio.run(with_server(routes, body))


def test_range_download_resumes() -> None:
    data = bytes(range(256)) * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    async def blob(request: web.Request) -> web.Response:
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-"))
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        return web.Response(status=206, body=data[start:], headers=headers)

    async def body(address: str) -> bytes:
        chunks: list[bytes] = []
        async with open_session() as session:
            descriptor = Descriptor("application/octet-stream", digest, len(data))
            await client_for(session, address).download_blob(descriptor, chunks.append, offset=1000)
        return b"".join(chunks)

    routes = [("GET", f"/v2/test/repo/blobs/{digest}", blob)]
    assert asyncio.run(with_server(routes, body)) == data[1000:]


def test_range_answered_wrongly() -> None:
    data = b"x" * 5000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    async def blob(request: web.Request) -> web.Response:
        return web.Response(status=206, body=data, headers={"Content-Range": "bytes 0-4999/5000"})

    async def body(address: str) -> None:
        async with open_session() as session:
            descriptor = Descriptor("application/octet-stream", digest, len(data))
            await client_for(session, address).download_blob(descriptor, print, offset=1000)

    with pytest.raises(Unavailable, match="Content-Range 'bytes 0-4999/5000'"):
        asyncio.run(with_server([("GET", f"/v2/test/repo/blobs/{digest}", blob)], body))


def test_streamed_upload_repeated_after_401() -> None:
    data = b"layer bytes" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    bodies: list[bytes] = []

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"token": "fresh"})

    async def put(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        if request.headers.get("Authorization") != "Bearer fresh":
            # As a registry answers a token that expired in the middle of a push.
            challenge = f'Bearer realm="http://{request.host}/token",service="svc"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(status=201)

    async def stream() -> Any:
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    async def body(address: str) -> None:
        async with open_session() as session:
            client = client_for(session, address)
            client._authorization = "Bearer expired"
            location = f"http://{address}/v2/test/repo/blobs/uploads/1"
            await client.finish_upload(location, digest, stream, len(data))

    routes = [("GET", "/token", token), ("PUT", "/v2/test/repo/blobs/uploads/1", put)]
    asyncio.run(with_server(routes, body))
    assert bodies == [data, data]
