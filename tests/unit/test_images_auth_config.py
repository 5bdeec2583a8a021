"""Credentials in docker's client config file: keys, encoding, other keys kept."""

import base64
import json
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.images.auth import (
    DOCKER_HUB_AUTH_KEY,
    Credentials,
    CredentialStore,
    auth_key,
    credentials_from_registry_auth,
    default_config_path,
    normalize_registry,
)


def encoded(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://127.0.0.1:5000/v1/", "127.0.0.1:5000"),
        ("Example.COM", "example.com"),
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        (DOCKER_HUB_AUTH_KEY, "docker.io"),
    ],
)
def test_normalize_registry(registry: str, expected: str) -> None:
    assert normalize_registry(registry) == expected


def test_normalize_registry_rejects_empty() -> None:
    with pytest.raises(InvalidArgument, match="invalid registry"):
        normalize_registry(" ")


def test_auth_key_docker_hub() -> None:
    assert auth_key("docker.io") == DOCKER_HUB_AUTH_KEY


def test_default_path_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", "/somewhere")
    assert default_config_path() == Path("/somewhere/config.json")


def test_get_missing_file(tmp_path: Path) -> None:
    assert CredentialStore(tmp_path / "config.json").get("127.0.0.1:5000") is None


def test_get_key_with_scheme(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    auths = {"http://127.0.0.1:5000/v2/": {"auth": encoded("bob", "pw:with:colons")}}
    path.write_text(json.dumps({"auths": auths}))
    assert CredentialStore(path).get("127.0.0.1:5000") == Credentials("bob", "pw:with:colons")


def test_get_username_password_fields(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"r.example": {"username": "u", "password": "p"}}}))
    assert CredentialStore(path).get("r.example") == Credentials("u", "p")


def test_get_invalid_base64(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"r.example": {"auth": "%%%"}}}))
    with pytest.raises(InvalidArgument, match="invalid auth entry for r.example"):
        CredentialStore(path).get("r.example")


def test_get_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(InvalidArgument, match="invalid docker config file"):
        CredentialStore(path).get("r.example")


def test_store_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"credsStore": "x", "auths": {"other": {"auth": "eDp5"}}}))
    CredentialStore(path).store("docker.io", Credentials("me", "pw"))
    document = json.loads(path.read_text())
    assert document["credsStore"] == "x"
    assert document["auths"]["other"] == {"auth": "eDp5"}
    assert document["auths"][DOCKER_HUB_AUTH_KEY] == {"auth": encoded("me", "pw")}


def test_store_replaces_old_spelling(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"https://r.example/v1/": {"auth": encoded("a", "b")}}}))
    CredentialStore(path).store("r.example", Credentials("c", "d"))
    assert list(json.loads(path.read_text())["auths"]) == ["r.example"]


def test_store_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.json"
    CredentialStore(path).store("r.example", Credentials("c", "d"))
    assert path.stat().st_mode & 0o777 == 0o600


def test_remove_absent(tmp_path: Path) -> None:
    assert CredentialStore(tmp_path / "config.json").remove("r.example") is False


def test_credentials_repr_hides_password() -> None:
    assert "pw" not in repr(Credentials("me", "pw"))


def registry_auth(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()


def test_registry_auth_header() -> None:
    header = registry_auth({"username": "me", "password": "pw", "serveraddress": "r.example"})
    assert credentials_from_registry_auth(header) == Credentials("me", "pw")


def test_registry_auth_unpadded() -> None:
    header = registry_auth({"username": "me", "password": "pw1"}).rstrip("=")
    assert credentials_from_registry_auth(header) == Credentials("me", "pw1")


@pytest.mark.parametrize("header", ["", registry_auth({}), registry_auth({"username": ""})])
def test_registry_auth_anonymous(header: str) -> None:
    assert credentials_from_registry_auth(header) is None


@pytest.mark.parametrize("header", ["%%%", registry_auth([1, 2])])
def test_registry_auth_invalid(header: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid X-Registry-Auth header"):
        credentials_from_registry_auth(header)
