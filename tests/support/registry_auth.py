"""Registries that require a login, for tests: htpasswd Basic auth and a token service.

``start_htpasswd_registry`` runs Debian's docker-registry with an htpasswd file made by
``htpasswd -B`` (apache2-utils). ``start_token_registry`` runs a token service on loopback
(a stdlib HTTP server in a thread) and a docker-registry configured with ``auth: token:``
that trusts the service's self-signed certificate. The service signs RS256 JWTs with
``openssl dgst`` and grants the requested actions to a user with the right password and
nothing to anyone else, so the registry then responds 401.

Layout of the directory each one is given::

    <dir>/htpasswd               users of the Basic auth registry
    <dir>/token.key, token.pem   the token service's key and certificate
    <dir>/registry/              storage and log of the registry (support.registry)
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from support.registry import Registry, start_registry

SERVICE = "ketch-test-registry"
ISSUER = "ketch-test-token-service"

HTPASSWD_CONFIG = """\
auth:
  htpasswd:
    realm: ketch-test
    path: {path}
"""

TOKEN_CONFIG = """\
auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {certificate}
"""


@contextmanager
def start_htpasswd_registry(
    directory: Path, user: str, password: str, netns: str | None = None
) -> Iterator[Registry]:
    """Run a registry that accepts ``user``/``password`` with HTTP Basic auth, inside the
    network namespace ``netns`` when one is named."""
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd is not installed (Debian package apache2-utils)")
    directory.mkdir(parents=True, exist_ok=True)
    line = subprocess.run(
        ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
    ).stdout.strip()
    htpasswd = directory / "htpasswd"
    htpasswd.write_text(line + "\n")
    registry = start_registry(
        directory / "registry", netns=netns, extra_config=HTPASSWD_CONFIG.format(path=htpasswd)
    )
    try:
        yield registry
    finally:
        registry.stop()


@dataclass
class TokenRequest:
    account: str | None  # the user the request authenticated as, None when anonymous
    scopes: list[str]
    granted: bool


@dataclass
class TokenService:
    users: dict[str, str]
    key: Path
    certificate_der: bytes
    requests: list[TokenRequest] = field(default_factory=list)
    address: str = ""

    def issue(self, account: str | None, scopes: list[str]) -> str:
        """Return a signed token granting ``scopes`` to ``account`` (nothing if None)."""
        access = []
        if account is not None:
            for scope in scopes:
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {
            "alg": "RS256",
            "typ": "JWT",
            "x5c": [base64.b64encode(self.certificate_der).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": account or "",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header))}.{_b64url(json.dumps(claims))}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"


@contextmanager
def start_token_registry(
    directory: Path, users: dict[str, str]
) -> Iterator[tuple[Registry, TokenService]]:
    """Run a token service for ``users`` and a registry that trusts its tokens."""
    directory.mkdir(parents=True, exist_ok=True)
    key, certificate = directory / "token.key", directory / "token.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=ketch-test-token", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    der = subprocess.run(
        ["openssl", "x509", "-in", str(certificate), "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    service = TokenService(users, key, der)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(service))
    service.address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = TOKEN_CONFIG.format(
            realm=f"http://{service.address}/token",
            service=SERVICE,
            issuer=ISSUER,
            certificate=certificate,
        )
        registry = start_registry(directory / "registry", extra_config=config)
        try:
            yield registry, service
        finally:
            registry.stop()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _handler_for(service: TokenService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
            query = parse_qs(urlsplit(self.path).query)
            scopes = query.get("scope", [])
            account = self._authenticated_user()
            if account == "":
                service.requests.append(TokenRequest(None, scopes, granted=False))
                self._respond(401, {"details": "incorrect username or password"})
                return
            service.requests.append(TokenRequest(account, scopes, granted=account is not None))
            self._respond(200, {"token": service.issue(account, scopes)})

        def _authenticated_user(self) -> str | None:
            """Return the user, None when anonymous, "" when the credentials are wrong."""
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user if service.users.get(user) == password else ""

        def _respond(self, status: int, document: dict[str, object]) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # pytest shows the test's own output; the request list is enough

    return Handler


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
