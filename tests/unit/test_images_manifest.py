"""Manifests, indexes and configs: validation, media types and platform selection."""

import json
from typing import Any

import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.images.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    build_manifest,
    config_diff_ids,
    detect_media_type,
    load_document,
    parse_manifest,
    select_manifest,
)

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64
AMD64 = Platform("linux", "amd64")


def entry(digest: str, os: str, architecture: str, variant: str = "") -> dict[str, Any]:
    platform = {"os": os, "architecture": architecture}
    if variant:
        platform["variant"] = variant
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": 10, "platform": platform}


def manifest_document(layer_type: str = "application/vnd.oci.image.layer.v1.tar+gzip") -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST_A,
                   "size": 5},
        "layers": [{"mediaType": layer_type, "digest": DIGEST_B, "size": 7}],
    }  # fmt: skip


def test_select_manifest_for_platform() -> None:
    index = {
        "manifests": [entry(DIGEST_A, "linux", "arm64", "v8"), entry(DIGEST_B, "linux", "amd64")]
    }
    assert select_manifest(index, AMD64, "index").digest == DIGEST_B


def test_select_manifest_prefers_exact_variant() -> None:
    index = {
        "manifests": [
            entry(DIGEST_A, "linux", "arm"),
            entry(DIGEST_B, "linux", "arm", "v7"),
        ]
    }
    assert select_manifest(index, Platform("linux", "arm", "v7"), "index").digest == DIGEST_B


def test_select_manifest_accepts_missing_variant() -> None:
    index = {"manifests": [entry(DIGEST_A, "linux", "arm64")]}
    assert select_manifest(index, Platform("linux", "arm64", "v8"), "index").digest == DIGEST_A


def test_select_manifest_skips_attestations() -> None:
    index = {
        "manifests": [entry(DIGEST_A, "unknown", "unknown"), entry(DIGEST_B, "linux", "amd64")]
    }
    assert select_manifest(index, AMD64, "index").digest == DIGEST_B


def test_select_manifest_no_match() -> None:
    index = {"manifests": [entry(DIGEST_A, "windows", "amd64")]}
    with pytest.raises(NotFound, match="no matching manifest for linux/amd64"):
        select_manifest(index, AMD64, "index")


def test_parse_manifest_descriptors() -> None:
    manifest = parse_manifest(manifest_document(), OCI_MANIFEST, "manifest")
    assert manifest.config.digest == DIGEST_A
    assert [layer.digest for layer in manifest.layers] == [DIGEST_B]


def test_parse_manifest_accepts_zstd() -> None:
    document = manifest_document("application/vnd.oci.image.layer.v1.tar+zstd")
    manifest = parse_manifest(document, OCI_MANIFEST, "manifest")
    assert manifest.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar+zstd"


def test_parse_manifest_rejects_unknown_layer() -> None:
    document = manifest_document("application/vnd.example.layer.v1.tar+lz4")
    with pytest.raises(InvalidArgument, match="unsupported media type"):
        parse_manifest(document, OCI_MANIFEST, "manifest")


def test_parse_manifest_rejects_schema1() -> None:
    with pytest.raises(InvalidArgument, match="schema 1"):
        parse_manifest({"schemaVersion": 1}, "application/vnd.docker.distribution.manifest.v1+json",
                       "manifest")  # fmt: skip


def test_parse_manifest_rejects_bad_digest() -> None:
    document = manifest_document()
    document["layers"][0]["digest"] = "sha256:../../etc"
    with pytest.raises(InvalidArgument, match="invalid digest"):
        parse_manifest(document, OCI_MANIFEST, "manifest")


def test_parse_manifest_rejects_negative_size() -> None:
    document = manifest_document()
    document["config"]["size"] = -1
    with pytest.raises(InvalidArgument, match="invalid size"):
        parse_manifest(document, OCI_MANIFEST, "manifest")


@pytest.mark.parametrize(
    ("content_type", "document", "expected"),
    [
        (DOCKER_MANIFEST, {}, DOCKER_MANIFEST),
        ("application/json", {"mediaType": OCI_INDEX}, OCI_INDEX),
        ("text/plain", {"manifests": []}, OCI_INDEX),
        ("", {"layers": []}, OCI_MANIFEST),
        (f"{DOCKER_MANIFEST_LIST}; charset=utf-8", {}, DOCKER_MANIFEST_LIST),
    ],
)
def test_detect_media_type(content_type: str, document: dict, expected: str) -> None:
    assert detect_media_type(document, content_type) == expected


def test_load_document_rejects_non_object() -> None:
    with pytest.raises(InvalidArgument, match="not a JSON object"):
        load_document(b"[1, 2]", "manifest x")


def test_load_document_rejects_bad_json() -> None:
    with pytest.raises(InvalidArgument, match="manifest x is not valid JSON"):
        load_document(b"{", "manifest x")


def test_config_diff_ids_checked() -> None:
    config = {"rootfs": {"type": "layers", "diff_ids": ["sha256:short"]}}
    with pytest.raises(InvalidArgument, match=r"diff_ids\[0\]"):
        config_diff_ids(config, "config")


def test_build_manifest_round_trip() -> None:
    config = Descriptor("application/vnd.docker.container.image.v1+json", DIGEST_A, 3)
    layer = Descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", DIGEST_C, 9)
    data = build_manifest(config, [layer], DOCKER_MANIFEST)
    manifest = parse_manifest(json.loads(data), DOCKER_MANIFEST, "built")
    assert manifest.layers == [layer]
    assert manifest.config == config
