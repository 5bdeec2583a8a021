"""Registry endpoint selection for a repository, and the checks of the registry settings.

* ``docker.io`` names go to the configured mirrors in order (dockerd's ``registry-mirrors``),
  else to https://registry-1.docker.io;
* ``localhost``, loopback addresses (127.0.0.0/8, ::1) and ``insecure_registries`` entries
  (``host[:port]`` or a CIDR) are spoken to over plain HTTP;
* every other registry over HTTPS.

This module is apart from the registry client (``ketch.images.registry``) because the image
store checks the settings when ketchd starts, and ketchd imports the client only at its
first registry request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ketch.errors import InvalidArgument
from ketch.images.reference import DEFAULT_DOMAIN

DOCKER_HUB_URL = "https://registry-1.docker.io"


@dataclass(frozen=True)
class Endpoint:
    """A registry's base URL, ``scheme://host[:port]`` without a trailing slash."""

    url: str
    name: str  # how messages name it: "127.0.0.1:5000" or "mirror http://127.0.0.1:5055"
    is_mirror: bool = False


def validate_mirror(url: str) -> str:
    """Return a registry mirror URL without its trailing slash, or raise InvalidArgument."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"invalid registry mirror {url!r}: expected http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise InvalidArgument(
            f"invalid registry mirror {url!r}: a mirror URL has no path, query or user"
        )
    return f"{parts.scheme}://{parts.netloc}"


def validate_insecure_registry(entry: str) -> str:
    """Return an ``insecure_registries`` entry (``host[:port]`` or a CIDR) if well formed."""
    if not entry or "://" in entry or ("/" in entry and not _is_network(entry)):
        raise InvalidArgument(
            f"invalid insecure registry {entry!r}: expected host[:port] or a CIDR like 10.0.0.0/8"
        )
    return entry


def endpoints_for(
    domain: str, mirrors: Sequence[str], insecure_registries: Sequence[str]
) -> list[Endpoint]:
    """Return the endpoints to try for a repository on ``domain``, in order."""
    if domain == DEFAULT_DOMAIN:
        if mirrors:
            # Limitation: dockerd falls back to Docker Hub when every mirror fails; ketch
            # does not, so that a machine with mirrors never sends traffic elsewhere.
            return [Endpoint(url, f"mirror {url}", is_mirror=True) for url in mirrors]
        return [Endpoint(DOCKER_HUB_URL, DEFAULT_DOMAIN)]
    scheme = "http" if is_insecure(domain, insecure_registries) else "https"
    return [Endpoint(f"{scheme}://{domain}", domain)]


def is_insecure(domain: str, insecure_registries: Sequence[str]) -> bool:
    """Return whether ``domain`` is spoken to over plain HTTP."""
    host = _host_of(domain)
    if host == "localhost" or domain in insecure_registries or host in insecure_registries:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Limitation: a host name is matched against insecure_registries by name only; it
        # is not resolved to check it against the CIDR entries.
        return False
    if address.is_loopback:
        return True
    return any(
        address in ipaddress.ip_network(entry, strict=False)
        for entry in insecure_registries
        if _is_network(entry)
    )


def _host_of(domain: str) -> str:
    if domain.startswith("["):
        return domain[1:].partition("]")[0]
    return domain.rpartition(":")[0] if ":" in domain else domain


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return "/" in entry
