"""Registry credentials: the ``auths`` of docker's client config file, read and written.

ketch shares the file with the docker CLI, so a ``docker login`` serves ketch and the
other way round. The file is ``$DOCKER_CONFIG/config.json`` when ``DOCKER_CONFIG`` is set,
else ``~/.docker/config.json``::

    {
        "auths": {
            "https://index.docker.io/v1/": {"auth": "<base64 of user:password>"},
            "127.0.0.1:5000": {"auth": "..."}
        },
        ...other keys, kept as they are...
    }

Docker Hub's credentials are stored under ``https://index.docker.io/v1/`` as docker does;
every other registry under its ``host[:port]``. Keys written with a scheme or a path by
older clients (``https://127.0.0.1:5000/v1/``) are found too.

The file is rewritten through a temporary file and a rename, with mode 0600, because it
contains passwords in base64, which is an encoding and not encryption.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ketch.errors import InvalidArgument, SystemFailure
from ketch.images.reference import DEFAULT_DOMAIN

log = logging.getLogger(__name__)

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset(
    {DEFAULT_DOMAIN, "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or an identity token in ``password``) for one registry."""

    username: str
    password: str

    def basic_header(self) -> str:
        """Return the value of an ``Authorization`` header for HTTP Basic authentication."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def __repr__(self) -> str:
        # Keeps the password out of logs and tracebacks.
        return f"Credentials(username={self.username!r}, password='***')"


def default_config_path() -> Path:
    """Return the docker client config file this process uses."""
    directory = os.environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path.home() / ".docker" / "config.json"


def auth_key(registry: str) -> str:
    """Return the ``auths`` key for a registry domain (``docker.io`` -> Docker Hub's URL)."""
    host = normalize_registry(registry)
    return DOCKER_HUB_AUTH_KEY if host == DEFAULT_DOMAIN else host


def normalize_registry(registry: str) -> str:
    """Return the ``host[:port]`` of a registry given as a domain, a URL or an auths key."""
    text = registry.strip()
    if not text:
        raise InvalidArgument("invalid registry '': expected a host name like 127.0.0.1:5000")
    if "://" in text:
        parts = urlsplit(text)
        if not parts.netloc:
            raise InvalidArgument(f"invalid registry {registry!r}: the URL has no host")
        text = parts.netloc
    else:
        text = text.partition("/")[0]
    text = text.lower()
    if text in _DOCKER_HUB_ALIASES:
        return DEFAULT_DOMAIN
    return text


class CredentialStore:
    """The ``auths`` section of one docker client config file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_config_path()

    def get(self, registry: str) -> Credentials | None:
        """Return the stored credentials for ``registry``, or None when there are none."""
        host = normalize_registry(registry)
        auths = self._read().get("auths")
        if not isinstance(auths, dict):
            return None
        for key, entry in auths.items():
            if not isinstance(entry, dict) or _key_host(key) != host:
                continue
            credentials = _decode_entry(entry, key, self.path)
            if credentials is not None:
                return credentials
        return None

    def store(self, registry: str, credentials: Credentials) -> None:
        """Write ``credentials`` for ``registry``, replacing any earlier entry for it."""
        document = self._read()
        auths = document.get("auths")
        if not isinstance(auths, dict):
            auths = {}
        host = normalize_registry(registry)
        for key in [key for key in auths if _key_host(key) == host]:
            del auths[key]
        pair = f"{credentials.username}:{credentials.password}".encode()
        auths[auth_key(registry)] = {"auth": base64.b64encode(pair).decode("ascii")}
        document["auths"] = auths
        self._write(document)
        log.info("stored credentials of user %s for %s in %s", credentials.username, host,
                 self.path)  # fmt: skip

    def remove(self, registry: str) -> bool:
        """Remove the entries for ``registry``; return whether there was one."""
        document = self._read()
        auths = document.get("auths")
        if not isinstance(auths, dict):
            return False
        host = normalize_registry(registry)
        keys = [key for key in auths if _key_host(key) == host]
        if not keys:
            return False
        for key in keys:
            del auths[key]
        self._write(document)
        log.info("removed credentials for %s from %s", host, self.path)
        return True

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise SystemFailure(f"cannot read {self.path}: {error.strerror}") from None
        if not text.strip():
            return {}
        try:
            document = json.loads(text)
        except ValueError as error:
            raise InvalidArgument(f"invalid docker config file {self.path}: {error}") from None
        if not isinstance(document, dict):
            raise InvalidArgument(f"invalid docker config file {self.path}: expected an object")
        return document

    def _write(self, document: dict[str, Any]) -> None:
        directory = self.path.parent
        temporary = directory / f".{self.path.name}.{secrets.token_hex(8)}"
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(temporary, flags, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump(document, file, indent="\t")
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.rename(temporary, self.path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise SystemFailure(f"cannot write {self.path}: {error.strerror}") from None


def credentials_from_registry_auth(header: str) -> Credentials | None:
    """Decode the Engine API's ``X-Registry-Auth`` header (base64url of a JSON AuthConfig).

    Returns None for an empty header or one without a user name, which docker sends for
    anonymous requests.
    """
    text = header.strip()
    if not text:
        return None
    try:
        padded = text + "=" * (-len(text) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            "invalid X-Registry-Auth header: expected base64url-encoded JSON"
        ) from None
    if not isinstance(document, dict):
        raise InvalidArgument("invalid X-Registry-Auth header: expected a JSON object")
    username, password = document.get("username"), document.get("password")
    if isinstance(username, str) and username and isinstance(password, str):
        return Credentials(username, password)
    # Limitation: identity and registry tokens in the header are not used.
    return None


def _key_host(key: str) -> str:
    try:
        return normalize_registry(key)
    except InvalidArgument:
        return ""


def _decode_entry(entry: dict[str, Any], key: str, path: Path) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            pair = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument(
                f"invalid auth entry for {key} in {path}: expected base64 of user:password"
            ) from None
        username, separator, password = pair.partition(":")
        if not separator:
            raise InvalidArgument(
                f"invalid auth entry for {key} in {path}: expected base64 of user:password"
            )
        return Credentials(username, password)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    # Limitation: credential helpers (credsStore, credHelpers) and identity tokens are not
    # used, so a registry logged in to through a helper is spoken to anonymously.
    return None
