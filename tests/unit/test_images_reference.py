"""Image reference parsing and normalisation, checked against docker's behaviour."""

import pytest

from ketch.errors import InvalidArgument
from ketch.images.reference import is_image_id, parse_normalized, parse_reference

DIGEST = "sha256:" + "ab" * 32

NORMALISED = [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
    ("user/app", "docker.io/user/app:latest"),
    ("user/app/part", "docker.io/user/app/part:latest"),
    ("localhost/x", "localhost/x:latest"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("host:5000/a/b", "host:5000/a/b:latest"),
    ("host:5000/a/b:v1", "host:5000/a/b:v1"),
    (f"host:5000/a/b@{DIGEST}", f"host:5000/a/b@{DIGEST}"),
    (f"host:5000/a/b:v1@{DIGEST}", f"host:5000/a/b:v1@{DIGEST}"),
    ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest"),
    ("[::1]:5000/busybox", "[::1]:5000/busybox:latest"),
    ("example.com/team/app", "example.com/team/app:latest"),
    ("Registry/app", "Registry/app:latest"),
    ("a-b_c__d/e.f", "docker.io/a-b_c__d/e.f:latest"),
    ("busybox:Tag_1.2-x", "docker.io/library/busybox:Tag_1.2-x"),
]

FAMILIAR = [
    ("busybox", "busybox:latest"),
    ("docker.io/library/busybox:1.36", "busybox:1.36"),
    ("user/app", "user/app:latest"),
    ("docker.io/library/a/b", "library/a/b:latest"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    (f"busybox@{DIGEST}", f"busybox@{DIGEST}"),
]

INVALID = [
    ("", "at least one component"),
    ("Busybox", "must be lowercase"),
    ("Not:A:Reference", "must be lowercase"),
    ("busybox:", "invalid reference format"),
    ("busybox:-tag", "invalid reference format"),
    ("busybox:" + "x" * 129, "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("a/b/", "invalid reference format"),
    ("-leading/dash", "invalid reference format"),
    ("a__-b", "invalid reference format"),
    ("busybox@sha256:abc", "invalid reference format"),
    ("busybox@md5:" + "ab" * 16, "unsupported digest algorithm"),
    ("busybox@sha256:" + "AB" * 32, "64 lowercase hex"),
    ("ab" * 32, "image ID"),
    ("host:port/x", "invalid reference format"),
    ("a/" * 130 + "b", "255 characters"),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISED)
def test_reference_normalised(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


@pytest.mark.parametrize(("text", "expected"), FAMILIAR)
def test_reference_familiar(text: str, expected: str) -> None:
    assert parse_reference(text).familiar() == expected


@pytest.mark.parametrize(("text", "fragment"), INVALID)
def test_reference_invalid(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_reference(text)
    assert str(caught.value).startswith("invalid reference format")
    assert fragment in str(caught.value)


def test_reference_error_names_input() -> None:
    with pytest.raises(InvalidArgument, match="'Busybox'"):
        parse_reference("Busybox")


def test_reference_parts() -> None:
    reference = parse_reference(f"localhost:5000/team/app:v2@{DIGEST}")
    assert reference.domain == "localhost:5000"
    assert reference.path == "team/app"
    assert reference.tag == "v2"
    assert reference.digest == DIGEST


def test_normalized_keeps_missing_tag() -> None:
    assert parse_normalized("busybox").tag is None


def test_familiar_name_of_official_image() -> None:
    assert parse_reference("busybox").familiar_name == "busybox"


def test_image_id_detection() -> None:
    assert is_image_id("ab" * 32)
    assert is_image_id("sha256:" + "ab" * 32)
    assert not is_image_id("abc")
    assert not is_image_id("busybox")
