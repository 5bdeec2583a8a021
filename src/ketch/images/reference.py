"""Image references: parsing, Docker's normalisation and the familiar form.

A reference names an image in a registry::

    [domain[:port]/]path[:tag][@digest]

Docker normalises a short name before using it, and ketch does the same, so that
``busybox``, ``library/busybox`` and ``docker.io/library/busybox:latest`` are one image:

* a first path component is a registry domain only when it contains ``.`` or ``:``, is
  ``localhost``, or contains an upper-case letter; otherwise the domain is ``docker.io``;
* ``index.docker.io`` is an old name of ``docker.io``;
* a one-component path on ``docker.io`` gets the ``library/`` prefix of official images;
* a reference with neither tag nor digest gets the tag ``latest``.

The familiar form undoes the first three steps for display (``busybox:latest``), as the
docker CLI and the Engine API's ``RepoTags`` show names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ketch.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPOSITORY_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6_ADDRESS = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6_ADDRESS})(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

DOMAIN_PATTERN = re.compile(_DOMAIN)
PATH_PATTERN = re.compile(_PATH)
TAG_PATTERN = re.compile(_TAG)
SHA256_DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
_ANY_DIGEST_PATTERN = re.compile(_DIGEST)
_IMAGE_ID_PATTERN = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: ``domain/path`` plus a tag, a digest or both."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name, ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository name as docker shows it, ``busybox`` for the one above."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        short = self.path.removeprefix(OFFICIAL_REPOSITORY_PREFIX)
        if short != self.path and "/" not in short:
            return short
        return self.path

    def familiar(self) -> str:
        """Return the reference as docker shows it: ``busybox:latest``."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def __str__(self) -> str:
        return self.name + self._suffix()

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag else ""
        if self.digest:
            suffix += f"@{self.digest}"
        return suffix


def is_image_id(text: str) -> bool:
    """Return whether ``text`` is a full image ID, with or without ``sha256:``."""
    return _IMAGE_ID_PATTERN.fullmatch(text.removeprefix("sha256:")) is not None


def parse_reference(text: str) -> Reference:
    """Parse and normalise ``text``, adding the tag ``latest`` when it has no tag or digest.

    Raises InvalidArgument whose message starts with docker's ``invalid reference format``
    and names the input.
    """
    reference = parse_normalized(text)
    if reference.tag is None and reference.digest is None:
        return Reference(reference.domain, reference.path, DEFAULT_TAG, None)
    return reference


def parse_normalized(text: str) -> Reference:
    """Parse and normalise ``text`` without adding a default tag."""
    if not text:
        raise _invalid(text, "repository name must have at least one component")
    if _IMAGE_ID_PATTERN.fullmatch(text):
        raise _invalid(text, "a 64-character hexadecimal string is an image ID, not a name")

    remainder, digest = _split_digest(text)
    remainder, tag = _split_tag(remainder)
    domain, path = _split_domain(remainder)

    if path != path.lower():
        raise _invalid(text, "repository name must be lowercase")
    if not DOMAIN_PATTERN.fullmatch(domain) or not PATH_PATTERN.fullmatch(path):
        raise _invalid(text)
    if len(f"{domain}/{path}") > MAX_NAME_LENGTH:
        raise _invalid(text, f"repository name must not be more than {MAX_NAME_LENGTH} characters")
    return Reference(domain, path, tag, digest)


def validate_digest(digest: str, label: str = "digest") -> str:
    """Return ``digest`` if it is a sha256 digest, else raise InvalidArgument naming it."""
    if SHA256_DIGEST_PATTERN.fullmatch(digest):
        return digest
    if _ANY_DIGEST_PATTERN.fullmatch(digest) and not digest.startswith("sha256:"):
        raise InvalidArgument(f"unsupported digest algorithm in {label} {digest!r}: use sha256")
    raise InvalidArgument(f"invalid {label} {digest!r}: expected sha256:<64 lowercase hex digits>")


def _split_digest(text: str) -> tuple[str, str | None]:
    name, separator, digest = text.partition("@")
    if not separator:
        return text, None
    if not _ANY_DIGEST_PATTERN.fullmatch(digest):
        raise _invalid(text)
    if not digest.startswith("sha256:"):
        raise _invalid(text, "unsupported digest algorithm (ketch supports sha256)")
    if not SHA256_DIGEST_PATTERN.fullmatch(digest):
        raise _invalid(text, "invalid sha256 digest (expected 64 lowercase hex digits)")
    return name, digest


def _split_tag(text: str) -> tuple[str, str | None]:
    # A colon after the last slash starts the tag; one before it belongs to a port.
    colon = text.rfind(":")
    if colon == -1 or "/" in text[colon:]:
        return text, None
    tag = text[colon + 1 :]
    if not TAG_PATTERN.fullmatch(tag):
        raise _invalid(text)
    return text[:colon], tag


def _split_domain(text: str) -> tuple[str, str]:
    first, slash, rest = text.partition("/")
    is_domain = bool(slash) and (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    )
    if is_domain:
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, text
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPOSITORY_PREFIX + path
    return domain, path


def _invalid(text: str, detail: str | None = None) -> InvalidArgument:
    if detail is None:
        return InvalidArgument(f"invalid reference format: {text!r}")
    return InvalidArgument(f"invalid reference format: {detail}: {text!r}")
