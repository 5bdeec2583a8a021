"""Registry client: the distribution API v2 over ketch.images.http_client, for pull and push.

``ketch.images.endpoints`` picks the endpoint that serves a repository.

Authentication follows the registry's 401 challenge and is repeated once per request:

* ``Basic``: the request is repeated with the stored credentials (ketch.images.auth);
* ``Bearer realm=...,service=...,scope=...``: ketch fetches a token from the realm, with
  the credentials when it has them and anonymously otherwise, for the repository's scope
  plus the scopes the challenge names, and repeats the request with the token. Docker
  Hub requires this even for public images.

The requests, all below ``<endpoint>/v2/<repository>/``:

=======  ==========================  =====================================================
method   path                        use
=======  ==========================  =====================================================
GET      (``/v2/`` itself)           login: are the credentials accepted?
GET      manifests/<tag or digest>   fetch a manifest or an index (``Accept`` lists both)
GET      blobs/<digest>              fetch a config or a layer, streamed (Range: resume)
HEAD     blobs/<digest>              push: is the blob there already?
POST     blobs/uploads/              push: start an upload; the response has a Location
POST     blobs/uploads/?mount=&from= push: link a blob from another repository (201)
PATCH    <Location>                  push: one chunk with Content-Range (chunked upload)
PUT      <Location>&digest=<digest>  push: the rest of the blob, or all of it (monolithic)
PUT      manifests/<tag>             push: the manifest, last
=======  ==========================  =====================================================
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

from ketch import __version__
from ketch.errors import Forbidden, InvalidArgument, KetchError, NotFound, Unavailable
from ketch.images.auth import Credentials, CredentialStore
from ketch.images.endpoints import Endpoint
from ketch.images.http_client import HTTPClientError, Origin, Response, Session
from ketch.images.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    MAX_DOCUMENT_SIZE,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    Descriptor,
    build_manifest,
)
from ketch.images.reference import SHA256_DIGEST_PATTERN

log = logging.getLogger(__name__)

_CHALLENGE_PARAMETER = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    content_type: str
    digest: str


def credentials_for(store: CredentialStore | None, endpoint: Endpoint) -> Credentials | None:
    """Return the stored credentials for an endpoint's host, if a store is given."""
    if store is None:
        return None
    return store.get(urlsplit(endpoint.url).netloc)


def open_session() -> Session:
    """Return an HTTP session for registry requests (no proxies from the environment).

    A connection attempt times out after 30 seconds, and a request fails when the server
    sends nothing for 120 seconds.
    """
    return Session(headers={"User-Agent": f"ketch/{__version__}"})


class RegistryClient:
    """Requests against one repository on one endpoint, authorized as its challenge asks.

    ``display_name`` names the repository in messages (``busybox``); ``actions`` is the
    token scope requested, ``pull`` or ``pull,push``; ``extra_scopes`` are further scopes
    such as ``repository:other/repo:pull`` for a cross-repository mount.
    """

    def __init__(
        self,
        session: Session,
        endpoint: Endpoint,
        repository: str,
        *,
        display_name: str | None = None,
        actions: str = "pull",
        credentials: Credentials | None = None,
        extra_scopes: Sequence[str] = (),
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.repository = repository
        self.display_name = display_name or repository
        self.actions = actions
        self.credentials = credentials
        self.extra_scopes = list(extra_scopes)
        self._authorization: str | None = None

    async def get_manifest(self, reference: str, display: str) -> FetchedManifest:
        """Fetch the manifest or index named by a tag or digest; ``display`` names it."""
        url = self._url(f"manifests/{reference}")
        async with self._request("GET", url, headers={"Accept": MANIFEST_ACCEPT}) as response:
            if response.status != 200:
                raise await self._failure(response, f"manifest for {display}")
            data = await self._read_document(response, url)
            content_type = response.headers.get("Content-Type", "")

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if SHA256_DIGEST_PATTERN.fullmatch(reference) and digest != reference:
            raise InvalidArgument(
                f"manifest {reference} from {self.endpoint.name} does not match its digest: "
                f"the content is {digest}"
            )
        return FetchedManifest(data, content_type, digest)

    async def download_blob(
        self,
        descriptor: Descriptor,
        sink: Callable[[bytes], None],
        *,
        offset: int = 0,
        restart: Callable[[], None] | None = None,
    ) -> None:
        """Stream the blob to ``sink`` chunk by chunk; the caller verifies the digest.

        With ``offset`` the request asks for the bytes from there on (HTTP Range). A
        registry that sends the whole blob instead makes ketch call ``restart`` first, so
        the caller drops the bytes it had.
        """
        url = self._url(f"blobs/{descriptor.digest}")
        headers = {"Range": f"bytes={offset}-"} if offset else None
        async with self._request("GET", url, headers=headers) as response:
            if offset and response.status == 206:
                self._check_content_range(response, offset, descriptor)
            elif response.status == 200:
                if offset:
                    log.info("registry %s ignored the range of blob %s, downloading it again",
                             self.endpoint.name, descriptor.digest)  # fmt: skip
                    if restart is not None:
                        restart()
            else:
                raise await self._failure(response, f"blob {descriptor.digest}")
            with self._network_errors("GET", url):
                # Chunks as they arrived, up to http_client.RECEIVE_SIZE bytes each.
                async for chunk in response.iter_chunks():
                    sink(chunk)

    def _check_content_range(self, response: Response, offset: int, descriptor: Descriptor) -> None:
        content_range = response.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            raise Unavailable(
                f"registry {self.endpoint.name} returned Content-Range {content_range!r} for "
                f"a request of blob {descriptor.digest} from byte {offset}"
            )

    async def blob_exists(self, digest: str) -> bool:
        url = self._url(f"blobs/{digest}")
        async with self._request("HEAD", url) as response:
            if response.status == 200:
                return True
            if response.status == 404:
                return False
            raise await self._failure(response, f"blob {digest}")

    async def upload_blob(self, digest: str, data: bytes) -> None:
        """Upload a blob in one PUT (a monolithic upload) unless the registry has it."""
        if await self.blob_exists(digest):
            log.debug("registry %s already has blob %s", self.endpoint.name, digest)
            return
        location = await self.start_upload(digest)
        await self.finish_upload(location, digest, data, len(data))

    async def mount_blob(self, digest: str, source_repository: str) -> str | None:
        """Ask the registry to link a blob from another repository on it (a cross-repository
        mount). Return None when it did, else the Location of the upload it started."""
        query = urlencode({"mount": digest, "from": source_repository})
        url = f"{self._url('blobs/uploads/')}?{query}"
        async with self._request("POST", url) as response:
            if response.status == 201:
                return None
            if response.status != 202 or "Location" not in response.headers:
                raise await self._failure(response, f"mount of blob {digest}")
            return urljoin(response.url, response.headers["Location"])

    async def start_upload(self, digest: str) -> str:
        """Start a blob upload session and return its Location URL."""
        async with self._request("POST", self._url("blobs/uploads/")) as response:
            if response.status != 202 or "Location" not in response.headers:
                raise await self._failure(response, f"upload of blob {digest}")
            return urljoin(response.url, response.headers["Location"])

    async def upload_chunk(self, location: str, data: bytes, offset: int) -> str:
        """Send one chunk (PATCH with Content-Range) and return the next Location."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(data) - 1}",
        }
        async with self._request("PATCH", location, headers=headers, data=data) as response:
            if response.status != 202 or "Location" not in response.headers:
                raise await self._failure(response, f"upload chunk at byte {offset}")
            return urljoin(response.url, response.headers["Location"])

    async def finish_upload(self, location: str, digest: str, data: Any, size: int) -> None:
        """Close an upload with PUT ``?digest=``; ``data`` is the rest of the blob (bytes, a
        function that returns an async iterator of bytes, or None when every byte went in
        chunks)."""
        separator = "&" if "?" in location else "?"
        put_url = f"{location}{separator}digest={quote(digest)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with self._request("PUT", put_url, headers=headers, data=data) as response:
            if response.status != 201:
                raise await self._failure(response, f"upload of blob {digest}")

    async def put_manifest(self, tag: str, data: bytes, media_type: str) -> str:
        """Upload a manifest under ``tag`` and return its digest."""
        url = self._url(f"manifests/{tag}")
        headers = {"Content-Type": media_type}
        async with self._request("PUT", url, headers=headers, data=data) as response:
            if response.status != 201:
                raise await self._failure(response, f"manifest {self.display_name}:{tag}")
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def _url(self, path: str) -> str:
        return f"{self.endpoint.url}/v2/{self.repository}/{path}"

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> AsyncIterator[Response]:
        response = await self._send(method, url, headers, data)
        # Only a 401 from the registry itself starts a new authorization. A host that a
        # redirect led to (blob storage, for example) could name any token service in its
        # challenge, and ketch would send the user's credentials there.
        from_registry = Origin.of(response.url) == Origin.of(url)
        if response.status == 401 and from_registry and _can_repeat(data):
            # One new authorization per request: a token for a wider scope (a mount needs
            # pull on the source repository) or the first one. A second 401 is final.
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            await self._authenticate(challenge)
            response = await self._send(method, url, headers, data)
        try:
            yield response
        finally:
            response.release()

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None,
        data: Any,
    ) -> Response:
        request_headers = dict(headers or {})
        if self._authorization is not None:
            request_headers["Authorization"] = self._authorization
        # A factory makes a new stream per attempt, so the request can be repeated with a
        # new token (one that expired during a long push, for example).
        body = data() if callable(data) else data
        with self._network_errors(method, url):
            return await self.session.request(method, url, headers=request_headers, data=body)

    async def _authenticate(self, challenge: str) -> None:
        scheme, parameters = parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None:
                raise Forbidden(
                    f"registry {self.endpoint.name} requires a login (Basic authentication): "
                    f"run 'ketch login {self.endpoint.name}'"
                )
            self._authorization = self.credentials.basic_header()
            return
        if scheme != "bearer" or not parameters.get("realm"):
            raise Unavailable(
                f"registry {self.endpoint.name} responded 401 with an unsupported challenge "
                f"{challenge!r}"
            )
        scopes = [f"repository:{self.repository}:{self.actions}"] if self.repository else []
        scopes += self.extra_scopes
        scopes += parameters.get("scope", "").split()
        token = await fetch_token(
            self.session,
            parameters["realm"],
            parameters.get("service", ""),
            list(dict.fromkeys(scopes)),
            self.credentials,
            self.endpoint.name,
        )
        self._authorization = f"Bearer {token}"

    async def _read_document(self, response: Response, url: str) -> bytes:
        if (response.content_length or 0) > MAX_DOCUMENT_SIZE:
            raise InvalidArgument(
                f"{url} is {response.content_length} bytes, more than {MAX_DOCUMENT_SIZE}"
            )
        with self._network_errors("GET", url):
            data = await response.read(MAX_DOCUMENT_SIZE + 1)
        if len(data) > MAX_DOCUMENT_SIZE:
            raise InvalidArgument(f"{url} is more than {MAX_DOCUMENT_SIZE} bytes")
        return data

    async def _failure(self, response: Response, subject: str) -> KetchError:
        """Build the error for an unexpected status; ``subject`` is what was requested."""
        try:
            body = await response.read(64 * 1024)
        except HTTPClientError:
            body = b""
        details = describe_error_body(body) or f"HTTP {response.status}"
        status = response.status
        pushing = "push" in self.actions

        if status == 404:
            return NotFound(f"{subject} not found: {details}")
        if status in (401, 403) and not pushing:
            return NotFound(
                f"pull access denied for {self.display_name}, repository does not exist or "
                f"may require 'docker login': {details}"
            )
        if status in (401, 403):
            return Forbidden(f"push access denied for {self.display_name}: {details}")
        if status == 429:
            return Unavailable(f"registry {self.endpoint.name} refused {subject}: {details}")
        return Unavailable(
            f"registry {self.endpoint.name} returned HTTP {status} for {subject}: {details}"
        )

    @contextmanager
    def _network_errors(self, method: str, url: str, service: str | None = None) -> Iterator[None]:
        try:
            yield
        except OSError as error:  # HTTPClientError and TimeoutError included
            where = service or f"registry {self.endpoint.name}"
            reason = str(error) or ("timed out" if isinstance(error, TimeoutError) else repr(error))
            raise Unavailable(f"{where} is unreachable: {method} {url}: {reason}") from None


async def check_login(session: Session, endpoint: Endpoint, credentials: Credentials) -> None:
    """Check ``credentials`` against the registry's base endpoint ``/v2/``.

    Raises Forbidden when the registry or its token service rejects them, Unavailable when
    either cannot be reached or returns an unexpected status.
    """
    url = f"{endpoint.url}/v2/"
    client = RegistryClient(session, endpoint, "", credentials=credentials)
    async with client._request("GET", url) as response:
        if response.status == 200:
            return
        if response.status in (401, 403):
            raise Forbidden(
                f"login to {endpoint.name} failed: the registry rejected the credentials of "
                f"user {credentials.username} (HTTP {response.status})"
            )
        raise await client._failure(response, "the base endpoint /v2/")


async def fetch_token(
    session: Session,
    realm: str,
    service: str,
    scopes: Sequence[str],
    credentials: Credentials | None,
    registry_name: str,
) -> str:
    """Fetch a Bearer token from a token service (the distribution token protocol).

    With ``credentials`` the request carries them with Basic authentication and names the
    account, so the token grants what that user may do; without, the token is anonymous.
    """
    query: list[tuple[str, str]] = [("scope", scope) for scope in scopes]
    if service:
        query.append(("service", service))
    headers = {}
    if credentials is not None:
        query.append(("account", credentials.username))
        headers["Authorization"] = credentials.basic_header()
    who = f"user {credentials.username}" if credentials else "an anonymous user"
    log.debug("fetching a token from %s for %s, scopes %s", realm, who, " ".join(scopes))

    try:
        async with await session.request("GET", realm, params=query, headers=headers) as response:
            body = await response.read(MAX_DOCUMENT_SIZE)
    except OSError as error:  # HTTPClientError and TimeoutError included
        reason = str(error) or repr(error)
        raise Unavailable(f"token service {realm} is unreachable: {reason}") from None
    if response.status in (401, 403) and credentials is not None:
        raise Forbidden(
            f"token service {realm} for registry {registry_name} rejected the credentials "
            f"of user {credentials.username}: HTTP {response.status}"
        )
    if response.status != 200:
        raise Unavailable(
            f"token service {realm} for registry {registry_name} returned HTTP "
            f"{response.status}: {body[:200].decode(errors='replace')}"
        )
    try:
        document = json.loads(body)
        token = document.get("token") or document.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise Unavailable(f"token service {realm} returned no token")
    return token


def _can_repeat(data: Any) -> bool:
    """Return whether a request body can be sent a second time: bytes and stream factories
    can, a stream that is already being consumed cannot."""
    return data is None or callable(data) or isinstance(data, bytes | bytearray)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split a ``WWW-Authenticate`` value into its lowercase scheme and its parameters."""
    scheme, _, rest = header.strip().partition(" ")
    parameters = {}
    for match in _CHALLENGE_PARAMETER.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        value = bare if quoted is None else re.sub(r"\\(.)", r"\1", quoted)
        parameters[match.group(1).lower()] = value
    return scheme.lower(), parameters


def describe_error_body(body: bytes) -> str:
    """Render a registry's ``{"errors": [...]}`` body as ``manifest unknown: <message>``."""
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(errors, list):
        return ""
    parts = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        code = str(error.get("code", "")).lower().replace("_", " ")
        message = str(error.get("message", ""))
        parts.append(f"{code}: {message}" if code and message else code or message)
    return "; ".join(part for part in parts if part)


async def push_image(
    session: Session,
    endpoint: Endpoint,
    repository: str,
    tag: str,
    config: bytes,
    layers: Sequence[bytes],
    manifest_media_type: str = DOCKER_MANIFEST,
    credentials: Credentials | None = None,
) -> str:
    """Push an image made of gzip ``layers`` (bottom first) and ``config``; return the
    manifest digest. Blobs go first, the manifest last, so the tag never names a manifest
    whose blobs are missing."""
    client = RegistryClient(
        session, endpoint, repository, actions="pull,push", credentials=credentials
    )
    docker = manifest_media_type == DOCKER_MANIFEST
    layer_media_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    config_media_type = DOCKER_CONFIG if docker else OCI_CONFIG

    layer_descriptors = []
    for layer in layers:
        digest = "sha256:" + hashlib.sha256(layer).hexdigest()
        await client.upload_blob(digest, layer)
        layer_descriptors.append(Descriptor(layer_media_type, digest, len(layer)))
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    await client.upload_blob(config_digest, config)

    config_descriptor = Descriptor(config_media_type, config_digest, len(config))
    manifest = build_manifest(config_descriptor, layer_descriptors, manifest_media_type)
    return await client.put_manifest(tag, manifest, manifest_media_type)
