"""Manifests, indexes and image configs: media types, validation and platform selection.

A registry serves an image as JSON documents that point at each other by digest:

* an index (OCI image index or Docker manifest list) names one manifest per platform;
* a manifest names one config blob and the layer blobs, bottom layer first;
* the config contains the runtime defaults (``config``: Env, Cmd, Entrypoint, ...) and
  ``rootfs.diff_ids``, the digests of the uncompressed layers, in the manifest's order.

Both the OCI and the Docker v2 schema 2 spellings are accepted. Docker schema 1
manifests are rejected.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from ketch.errors import InvalidArgument, NotFound
from ketch.images.reference import SHA256_DIGEST_PATTERN

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_MEDIA_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
GZIP_LAYER_MEDIA_TYPES = frozenset(
    {OCI_LAYER_GZIP, DOCKER_LAYER_GZIP, OCI_LAYER_NONDISTRIBUTABLE_GZIP}
)
# zstd layers need the zstandard package, which ketch.images.layers imports when it meets one.
LAYER_MEDIA_TYPES = GZIP_LAYER_MEDIA_TYPES | {OCI_LAYER, OCI_LAYER_ZSTD}

# The Accept header of a manifest request: every kind ketch can use, preferred first.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

# A manifest or config larger than this is refused before it is parsed (4 MiB, the limit
# the distribution registry puts on manifests it accepts).
MAX_DOCUMENT_SIZE = 4 * 1024 * 1024

# platform.machine() values and the GOARCH/variant names that image indexes use.
_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: its media type, digest and size in bytes."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


def host_platform() -> Platform:
    """Return the platform this machine runs, in the names image indexes use."""
    machine = platform.machine()
    architecture, variant = _ARCHITECTURES.get(machine, (machine, ""))
    return Platform("linux", architecture, variant)


def load_document(data: bytes, label: str) -> dict[str, Any]:
    """Parse a JSON manifest, index or config; ``label`` names it in errors."""
    if len(data) > MAX_DOCUMENT_SIZE:
        raise InvalidArgument(f"{label} is {len(data)} bytes, more than {MAX_DOCUMENT_SIZE}")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"{label} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"{label} is not a JSON object")
    return document


def detect_media_type(document: dict[str, Any], content_type: str) -> str:
    """Return the media type of a manifest response.

    The ``Content-Type`` header decides unless it is a generic JSON type. Then the
    document's own ``mediaType`` field decides, and without one the document's shape.
    """
    content_type = content_type.split(";")[0].strip()
    known = INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES
    if content_type in known | {DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST}:
        return content_type
    media_type = document.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_MANIFEST
    if "manifests" in document:
        return OCI_INDEX
    return OCI_MANIFEST


def parse_descriptor(value: Any, label: str) -> Descriptor:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{label} is not a JSON object")
    media_type = value.get("mediaType")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidArgument(f"{label} has no mediaType")
    if not isinstance(digest, str) or not SHA256_DIGEST_PATTERN.fullmatch(digest):
        raise InvalidArgument(f"{label} has an invalid digest {digest!r}: expected sha256:<hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{label} has an invalid size {size!r}")
    return Descriptor(media_type, digest, size)


def parse_manifest(document: dict[str, Any], media_type: str, label: str) -> Manifest:
    """Validate an image manifest and return its config and layer descriptors."""
    if media_type in (DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST):
        raise InvalidArgument(
            f"{label} is a Docker schema 1 manifest, which ketch does not support: "
            "push the image again with a current client"
        )
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise InvalidArgument(f"{label} has unsupported media type {media_type!r}")
    if document.get("schemaVersion") != 2:
        raise InvalidArgument(f"{label} has schemaVersion {document.get('schemaVersion')!r}")

    config = parse_descriptor(document.get("config"), f"{label}: config")
    if config.media_type not in CONFIG_MEDIA_TYPES:
        raise InvalidArgument(f"{label}: config has unsupported media type {config.media_type!r}")

    raw_layers = document.get("layers")
    if not isinstance(raw_layers, list):
        raise InvalidArgument(f"{label} has no layers list")
    layers = [
        parse_descriptor(layer, f"{label}: layer {index}") for index, layer in enumerate(raw_layers)
    ]
    for index, layer in enumerate(layers):
        if layer.media_type not in LAYER_MEDIA_TYPES:
            raise InvalidArgument(
                f"{label}: layer {index} ({layer.digest}) has unsupported media type "
                f"{layer.media_type!r}; ketch unpacks plain, gzip and zstd tar layers"
            )
    return Manifest(media_type, config, layers)


def select_manifest(document: dict[str, Any], target: Platform, label: str) -> Descriptor:
    """Pick the manifest for the ``target`` platform from an index, as docker does.

    An entry matches on os and architecture; among those, one whose variant equals the
    target variant wins over one that names no variant. Raises NotFound in docker's
    wording when nothing matches.
    """
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise InvalidArgument(f"{label} has no manifests list")

    fallback: Descriptor | None = None
    for index, entry in enumerate(entries):
        descriptor = parse_descriptor(entry, f"{label}: manifest {index}")
        if descriptor.media_type not in MANIFEST_MEDIA_TYPES:
            continue
        entry_platform = entry.get("platform")
        if not isinstance(entry_platform, dict):
            continue
        if entry_platform.get("os") != target.os:
            continue
        if entry_platform.get("architecture") != target.architecture:
            continue
        variant = entry_platform.get("variant") or ""
        if variant == target.variant:
            return descriptor
        if not variant and fallback is None:
            fallback = descriptor
    if fallback is not None:
        return fallback
    raise NotFound(f"no matching manifest for {target} in the manifest list entries ({label})")


def config_diff_ids(config: dict[str, Any], label: str) -> list[str]:
    """Return ``rootfs.diff_ids`` of an image config after checking their form."""
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidArgument(f"{label} has no rootfs of type 'layers'")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise InvalidArgument(f"{label} has no rootfs.diff_ids list")
    for index, diff_id in enumerate(diff_ids):
        if not isinstance(diff_id, str) or not SHA256_DIGEST_PATTERN.fullmatch(diff_id):
            raise InvalidArgument(f"{label}: rootfs.diff_ids[{index}] is not a sha256 digest")
    return list(diff_ids)


def build_manifest(config: Descriptor, layers: list[Descriptor], media_type: str) -> bytes:
    """Serialise an image manifest of ``media_type`` (OCI or Docker v2 schema 2)."""
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise InvalidArgument(f"cannot build a manifest of media type {media_type!r}")
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(document, indent=3).encode()
